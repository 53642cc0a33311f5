//! HTTP routes. Handlers translate requests to `KeyService` calls and results back; they hold no
//! key rules.

pub mod audit;
pub mod events;
pub mod iam;
pub mod identity;
pub mod keys;
pub mod kmip;
pub mod openapi;
pub mod policies;
pub mod registrations;
pub mod rings;
pub mod search;
