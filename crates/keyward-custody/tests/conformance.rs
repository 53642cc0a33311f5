//! The shared Custody conformance suite, mounted for the software backend.

use keyward_custody::SoftwareCustody;

keyward_test::custody_suite!(software, {
    let dir = tempfile::tempdir().unwrap();
    let (custody, _) = SoftwareCustody::open_or_create(dir.path()).unwrap();
    (custody, dir)
});
