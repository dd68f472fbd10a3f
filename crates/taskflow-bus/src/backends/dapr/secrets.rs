//! Secrets through the sidecar's secrets API.

use std::collections::HashMap;
use std::fmt;

use super::{DaprSettings, Sidecar, describe_error, encode_component};
use crate::BusError;

/// Reads secrets from a Dapr secret store (`secrets.backend = dapr`).
#[derive(Clone)]
pub struct DaprSecrets {
    sidecar: Sidecar,
}

impl fmt::Debug for DaprSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprSecrets")
            .field("endpoint", &self.sidecar.endpoint)
            .finish_non_exhaustive()
    }
}

impl DaprSecrets {
    /// A reader using the sidecar described by `settings` (endpoint, API token, timeout).
    pub fn new(settings: &DaprSettings) -> Result<Self, BusError> {
        Ok(Self {
            sidecar: super::Sidecar::new(settings)?,
        })
    }

    /// The secret `key` of `store`: `GET /v1.0/secrets/<store>/<key>`. Stores with
    /// name/value semantics answer `{key: value}`, multi-value stores (Kubernetes) every
    /// field of the secret. A missing secret (`204`), an unknown store or a denied access is
    /// [`BusError::Config`]; an unreachable or failing sidecar [`BusError::Unavailable`].
    pub async fn get(&self, store: &str, key: &str) -> Result<HashMap<String, String>, BusError> {
        let path = format!(
            "/v1.0/secrets/{}/{}",
            encode_component(store),
            encode_component(key)
        );
        let response = self
            .sidecar
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(|error| {
                BusError::Unavailable(format!(
                    "cannot read secret {store}/{key} from Dapr sidecar at {}: {error}",
                    self.sidecar.endpoint
                ))
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Err(BusError::Config(format!(
                "Dapr secret {store}/{key} not found"
            )));
        }
        if status.is_success() {
            return response.json().await.map_err(|error| {
                BusError::Unavailable(format!(
                    "Dapr secret {store}/{key}: unreadable answer: {error}"
                ))
            });
        }
        let description = describe_error(response).await;
        if status.is_server_error() {
            Err(BusError::Unavailable(format!(
                "Dapr secret {store}/{key}: {description}"
            )))
        } else {
            Err(BusError::Config(format!(
                "Dapr secret {store}/{key}: {description}"
            )))
        }
    }
}
