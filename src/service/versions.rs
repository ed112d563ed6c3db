use super::AppState;
use super::{Result, ServiceError};
use crate::clock::Clock;
use crate::model::{VersionCreate, VersionUpdate};
use crate::store::StoreError;
use crate::store::{NewVersion, Store, VersionChange, VersionRow};

use super::{changed, lookup};
use super::{check_label, MAX_VERSION_LEN};

/// The longest refresh period: a year.
pub const MAX_REFRESH_SECONDS: i64 = 31_536_000;

fn check_refresh(every: Option<i64>) -> Result<()> {
    match every {
        Some(s) if !(1..=MAX_REFRESH_SECONDS).contains(&s) => Err(ServiceError::Invalid(format!(
            "refresh_every_seconds must be between 1 and {MAX_REFRESH_SECONDS}, or null for manual"
        ))),
        _ => Ok(()),
    }
}

fn refuse_refresh_of_aggregations(feature: &crate::store::FeatureRow) -> Result<()> {
    match feature.declaration {
        Some(_) => Err(ServiceError::Invalid(format!(
            "Feature '{}' declares aggregations, which are exact at every instant without \
             refreshes; leave refresh_every_seconds out",
            feature.name
        ))),
        None => Ok(()),
    }
}

pub fn duplicate(version: &str, feature_id: i64) -> ServiceError {
    ServiceError::Invalid(format!(
        "Version '{version}' already exists for feature {feature_id}"
    ))
}

/// Create a version that snapshots the feature's current SQL and entity key.
pub async fn create(
    store: &Store,
    clock: &Clock,
    feature_id: i64,
    req: VersionCreate,
) -> Result<VersionRow> {
    if let Some(body_id) = req.feature_id {
        if body_id != feature_id {
            return Err(ServiceError::Invalid(format!(
                "feature_id in the body ({body_id}) does not match the feature in the path ({feature_id})"
            )));
        }
    }
    check_label("version", &req.version, MAX_VERSION_LEN)?;
    check_refresh(req.refresh_every_seconds)?;
    let feature = lookup::feature(store, feature_id).await?;
    if req.refresh_every_seconds.is_some() {
        refuse_refresh_of_aggregations(&feature)?;
    }
    let row = store
        .create_version(
            &NewVersion {
                feature_id,
                version: &req.version,
                status: req.status.as_str(),
                computation_logic: &feature.computation_logic,
                entity_key: &feature.entity_key,
                refresh_every_seconds: req.refresh_every_seconds,
            },
            clock.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => duplicate(&req.version, feature_id),
            StoreError::StillReferenced => lookup::feature_not_found(feature_id),
            e => e.into(),
        })?;
    // No cache change: serving by name only considers computed versions.
    Ok(row)
}

pub async fn list(store: &Store, feature_id: i64) -> Result<Vec<VersionRow>> {
    lookup::feature(store, feature_id).await?;
    Ok(store.list_versions(feature_id).await?)
}

pub async fn get(store: &Store, feature_id: i64, version_id: i64) -> Result<VersionRow> {
    lookup::version(store, feature_id, version_id).await
}

/// Activate, deprecate or archive a version ("latest" serving follows at once), and/or set
/// its refresh period.
pub async fn update(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    req: VersionUpdate,
) -> Result<VersionRow> {
    if req.status.is_none() && req.refresh_every_seconds.is_none() {
        return Err(ServiceError::Invalid(
            "Nothing to change: give status and/or refresh_every_seconds".into(),
        ));
    }
    check_refresh(req.refresh_every_seconds.flatten())?;
    lookup::version(&state.store, feature_id, version_id).await?;
    if matches!(req.refresh_every_seconds, Some(Some(_))) {
        let feature = lookup::feature(&state.store, feature_id).await?;
        refuse_refresh_of_aggregations(&feature)?;
    }
    let state = state.clone();
    super::detached(async move {
        let change = VersionChange {
            status: req.status.map(|s| s.as_str()),
            refresh_every_seconds: req.refresh_every_seconds,
        };
        let (row, changes) = state
            .store
            .update_version(version_id, &change, state.clock.now())
            .await?
            .ok_or_else(|| lookup::version_not_found(version_id))?;
        changed::announce(&state, changes).await;
        Ok(row)
    })
    .await
}

pub async fn delete(state: &AppState, feature_id: i64, version_id: i64) -> Result<()> {
    lookup::version(&state.store, feature_id, version_id).await?;
    let state = state.clone();
    super::detached(async move {
        let deleted = state
            .store
            .delete_version(version_id)
            .await?
            .ok_or_else(|| lookup::version_not_found(version_id))?;
        changed::announce(&state, deleted).await;
        Ok(())
    })
    .await
}
