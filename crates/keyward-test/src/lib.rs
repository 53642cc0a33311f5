//! Conformance suites for Keyward's backend traits, in the manner of rustls' per-provider API
//! tests: every `Custody` and every `Store` implementation mounts the same suite with
//! [`custody_suite!`] or [`store_suite!`], so a new backend (PKCS#11, PostgreSQL) is held to
//! exactly the behaviour the rest of Keyward relies on.
//!
//! `postgres`: a throwaway PostgreSQL cluster per test process, a database per test.
//!
//! `process`: real `keyward serve` and service processes for end-to-end tests.
//!
//! Test-only: nothing here ships in the server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod custody;
pub mod kmip;
pub mod postgres;
pub mod process;
pub mod store;

/// Runs a future to completion on a fresh current-thread runtime (the suites' tests are plain
/// `#[test]`s so a mounting crate needs no async test macro).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Mounts the custody conformance suite as module `$name`. `$make` is an expression evaluating
/// to `(impl Custody, guard)`; the guard (e.g. a temporary directory) lives as long as the test.
#[macro_export]
macro_rules! custody_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__custody_tests!($make;
                wraps_and_unwraps_material_of_every_size,
                wrapped_material_does_not_contain_the_material,
                refuses_altered_wrapped_material,
                refuses_unknown_wrapping_keys,
                signs_and_verifies_records,
                refuses_altered_records_and_signatures,
                generates_fresh_material
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __custody_tests {
    ($make:expr; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                let (custody, _guard) = $make;
                $crate::custody::$test(&custody);
            }
        )*
    };
}

/// Mounts the store conformance suite as module `$name`. `$make` is an expression evaluating to
/// `(impl Store, guard)`.
#[macro_export]
macro_rules! store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__store_tests!($make;
                missing_records_are_none,
                keys_round_trip_with_their_first_version,
                keys_are_invisible_to_other_instances,
                updates_are_compare_and_swap_on_the_revision,
                rotation_adds_versions_in_order,
                listing_filters_pages_and_counts,
                listing_totals_follow_state_changes_and_purges,
                failed_writes_leave_nothing_behind,
                aggregated_events_are_appended_in_order_and_chained,
                identities_and_signing_keys_round_trip,
                refresh_tokens_are_single_use_and_a_reuse_revokes_the_family,
                delegated_authorizations_go_with_their_delegating_one,
                aliases_are_unique_limited_and_listed,
                key_rings_hold_keys_and_refuse_deletion_while_they_do,
                key_versions_page_newest_first_and_count_all,
                key_rings_page_oldest_first_and_count_all,
                instance_policies_round_trip_and_replace,
                purge_erases_versions_and_due_keys_finds_work,
                listing_searches_filters_and_sorts,
                substring_search_keeps_the_like_semantics,
                pages_read_from_the_end_match_the_forward_listing,
                registrations_round_trip_filter_and_belong_to_their_owner,
                key_changes_write_events_to_registration_owners_atomically,
                deletes_are_guarded_by_registrations_in_the_transaction,
                registrations_are_bounded_per_key_and_go_with_their_owner,
                acks_remove_events_from_the_pending_set,
                deliveries_are_leased_retried_and_counted
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_tests {
    ($make:expr; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                let (store, _guard) = $make;
                $crate::block_on($crate::store::$test(&store));
            }
        )*
    };
}

/// Mounts the `KmipStore` conformance suite as module `$name`. `$make` is an expression
/// evaluating to `(impl Store + KmipStore, guard)`.
#[macro_export]
macro_rules! kmip_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__kmip_store_tests!($make;
                adapters_round_trip_unique_and_limited,
                certificates_are_unique_limited_and_deleted_with_their_adapter,
                objects_block_adapter_deletion_until_destroyed,
                objects_round_trip_every_field_and_updates_replace_them,
                locate_matches_every_set_field_oldest_first_and_pages,
                certificates_are_found_by_fingerprint_in_every_instance
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kmip_store_tests {
    ($make:expr; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                let (store, _guard) = $make;
                $crate::block_on($crate::kmip::$test(&store));
            }
        )*
    };
}
