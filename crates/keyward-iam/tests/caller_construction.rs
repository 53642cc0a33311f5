//! `Caller` is made only by keyward-iam's authentication and core's crate-private system caller.
//! Rust cannot limit core's public (hidden) `Caller::authenticated` to one downstream crate, so
//! this test reads every crate's sources, benches and tests and fails when a crate other than
//! keyward-iam and keyward-core names it or builds an `Authenticated`.

use std::path::{Path, PathBuf};

/// What only keyward-iam (and core, which defines them) may write.
const FORBIDDEN: [&str; 3] = ["Caller::authenticated", "Authenticated {", "Authenticated{"];
/// The crates allowed to.
const ALLOWED: [&str; 2] = ["keyward-iam", "keyward-core"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_keyward_iam_and_core_construct_an_authenticated_caller() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| unreachable!("a crate lives in crates/"));
    let mut scanned = 0;
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(crates).unwrap_or_else(|e| panic!("{e}")) {
        let dir = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if ALLOWED.contains(&name) {
            continue;
        }
        let mut files = Vec::new();
        for sub in ["src", "benches", "tests"] {
            rust_files(&dir.join(sub), &mut files);
        }
        for file in files {
            scanned += 1;
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for pattern in FORBIDDEN {
                if text.contains(pattern) {
                    offenders.push(format!("{}: {pattern}", file.display()));
                }
            }
        }
    }
    // The scan must have seen the server at least, or it proves nothing.
    assert!(
        scanned > 10,
        "only {scanned} files scanned under {crates:?}"
    );
    assert!(
        offenders.is_empty(),
        "an authenticated Caller is keyward-iam's to make (IamService::caller):\n{}",
        offenders.join("\n")
    );
}
