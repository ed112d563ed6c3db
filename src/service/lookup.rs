//! Rows by id, or the not-found a client is told, and what a feature reference names: what every
//! service looks up, in one place, so no service calls another for it.

use super::{Result, ServiceError};
use crate::cache::LookupKey;
use crate::model::FeatureRef;
use crate::store::{FeatureRow, RawTableRow, Store, VersionRow};

pub fn feature_not_found(id: i64) -> ServiceError {
    ServiceError::NotFound(format!("Feature with ID {id} not found"))
}

pub fn version_not_found(id: i64) -> ServiceError {
    ServiceError::NotFound(format!("Feature version with ID {id} not found"))
}

pub fn table_not_found(id: i64) -> ServiceError {
    ServiceError::NotFound(format!("Raw table with ID {id} not found"))
}

pub async fn feature(store: &Store, id: i64) -> Result<FeatureRow> {
    store
        .get_feature(id)
        .await?
        .ok_or_else(|| feature_not_found(id))
}

/// A version of this feature; a version of another feature is not found here.
pub async fn version(store: &Store, feature_id: i64, version_id: i64) -> Result<VersionRow> {
    feature(store, feature_id).await?;
    match store.get_version(version_id).await? {
        Some(v) if v.feature_id == feature_id => Ok(v),
        _ => Err(version_not_found(version_id)),
    }
}

pub async fn table(store: &Store, id: i64) -> Result<RawTableRow> {
    store
        .get_raw_table(id)
        .await?
        .ok_or_else(|| table_not_found(id))
}

/// A feature reference (a version id, `name` or `name@version`): the key it has in an answer,
/// and the lookup that resolves it.
pub fn reference(feature: &FeatureRef) -> Result<(String, LookupKey)> {
    match feature {
        FeatureRef::Id(id) => Ok((id.to_string(), LookupKey::Version(*id))),
        FeatureRef::Name(text) => {
            let key = match text.rsplit_once('@') {
                Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                    LookupKey::Label(name.to_string(), version.to_string())
                }
                Some(_) => {
                    return Err(ServiceError::Invalid(format!(
                        "Invalid feature reference '{text}': use name, name@version or a version id"
                    )))
                }
                None if text.is_empty() => {
                    return Err(ServiceError::Invalid("Empty feature reference".into()))
                }
                None => LookupKey::FeatureName(text.clone()),
            };
            Ok((text.clone(), key))
        }
    }
}
