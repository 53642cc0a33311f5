//! Shared server state, passed explicitly to handlers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyward_core::{InstanceId, KeyService, Store};
use keyward_iam::{TokenIssuer, TokenVerifier};

use crate::config::ServerConfig;

/// What every handler may use. Built once at start.
pub struct AppState {
    /// The key service.
    pub keys: KeyService,
    /// Issues access tokens.
    pub issuer: TokenIssuer,
    /// Verifies access tokens.
    pub verifier: TokenVerifier,
    /// Resolved configuration.
    pub config: ServerConfig,
    /// Instance → owning account. Instances never change owner, so entries never go stale.
    instance_accounts: RwLock<HashMap<InstanceId, String>>,
}

impl AppState {
    /// State over a key service and token keys.
    pub fn new(keys: KeyService, issuer: TokenIssuer, config: ServerConfig) -> Arc<Self> {
        let verifier = issuer.verifier();
        Arc::new(AppState {
            keys,
            issuer,
            verifier,
            config,
            instance_accounts: RwLock::new(HashMap::new()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.keys.store()
    }

    /// The account owning `instance`, if the instance exists.
    pub async fn instance_account(
        &self,
        instance: InstanceId,
    ) -> Result<Option<String>, keyward_core::StoreError> {
        if let Some(a) = self
            .instance_accounts
            .read()
            .ok()
            .and_then(|m| m.get(&instance).cloned())
        {
            return Ok(Some(a));
        }
        let Some(rec) = self.store().instance(instance).await? else {
            return Ok(None);
        };
        if let Ok(mut m) = self.instance_accounts.write() {
            m.insert(instance, rec.account.clone());
        }
        Ok(Some(rec.account))
    }
}
