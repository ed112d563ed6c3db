//! Point-in-time lookups over a version's snapshots: for each (entity, timestamp) row, the
//! values of the snapshot in force at that timestamp, never a later one.

use polars::prelude::*;

/// For each row's timestamp, the position (in `valid_from`, sorted ascending with ties in
/// serving order) of the snapshot in force then: the last one valid at or before it. `None`
/// before the first snapshot, or when that snapshot is older than the row by more than
/// `max_age` microseconds.
pub fn snapshot_positions(
    row_micros: &[i64],
    valid_from: &[i64],
    max_age: Option<i64>,
) -> Vec<Option<u32>> {
    row_micros
        .iter()
        .map(|&t| {
            let after = valid_from.partition_point(|&v| v <= t);
            let position = after.checked_sub(1)?;
            match max_age {
                Some(age) if t - valid_from[position] > age => None,
                _ => Some(position as u32),
            }
        })
        .collect()
}

/// One snapshot as the gather needs it: its frame (entity key first) and each entity's row.
pub struct SnapshotView<'a> {
    pub frame: &'a DataFrame,
    pub rows: &'a PlHashMap<String, u32>,
}

/// A snapshot, owned and indexed: its frame (entity key first) and each entity's row.
pub struct Indexed {
    pub frame: DataFrame,
    pub rows: PlHashMap<String, u32>,
}

impl Indexed {
    /// Indexed for a training set's join: a snapshot of a feature keyed by several columns
    /// (its key column named for them, `["user_id","merchant_id"]`) by its tuples' compact
    /// form (`crate::keys::compact_of_id`), which the rows' ids take too; any other by its ids.
    pub fn for_join(frame: DataFrame) -> Result<Indexed, String> {
        let tuples = frame
            .columns()
            .first()
            .is_some_and(|c| c.name().starts_with('['));
        match tuples {
            true => Indexed::by(frame, crate::keys::compact_of_id),
            false => Indexed::new(frame),
        }
    }

    pub fn new(frame: DataFrame) -> Result<Indexed, String> {
        Indexed::by(frame, |id| Some(id.to_string()))
    }

    /// Each row by what `key_of` makes of its id (the first column); rows it answers `None`
    /// for are left out.
    fn by(frame: DataFrame, key_of: impl Fn(&str) -> Option<String>) -> Result<Indexed, String> {
        let key = frame
            .columns()
            .first()
            .ok_or("a snapshot without columns")?
            .str()
            .map_err(|e| e.to_string())?
            .clone();
        let mut rows = PlHashMap::with_capacity_and_hasher(frame.height(), Default::default());
        for (i, id) in key.iter().enumerate() {
            if let Some(key) = id.and_then(&key_of) {
                rows.insert(key, i as u32);
            }
        }
        Ok(Indexed { frame, rows })
    }

    pub fn view(&self) -> SnapshotView<'_> {
        SnapshotView {
            frame: &self.frame,
            rows: &self.rows,
        }
    }

    /// Value columns (all but the key).
    pub fn value_columns(&self) -> usize {
        self.frame.width().saturating_sub(1)
    }
}

/// Which of `count` snapshots a gather over `positions` reads: those some row resolves to,
/// and the newest (which gives the columns).
pub fn needed(positions: &[Option<u32>], count: usize) -> Vec<bool> {
    let mut needed = vec![false; count];
    for p in positions.iter().flatten() {
        needed[*p as usize] = true;
    }
    if let Some(last) = needed.last_mut() {
        *last = true;
    }
    needed
}

/// The value columns of the snapshot each row resolves to, one output row per input row:
/// nulls where the row has no snapshot or its entity is not in it. `present[i]` says whether
/// row `i` found its entity. `views[p]` must be `Some` for every position used, and at least
/// one must be, for the columns.
pub fn gather(
    entity: &StringChunked,
    positions: &[Option<u32>],
    views: &[Option<SnapshotView<'_>>],
) -> Result<(DataFrame, Vec<bool>), String> {
    let mut offsets = vec![0 as IdxSize; views.len()];
    let mut parts = Vec::new();
    let mut total: IdxSize = 0;
    for (p, view) in views.iter().enumerate() {
        if let Some(view) = view {
            offsets[p] = total;
            total += view.frame.height() as IdxSize;
            let names: Vec<PlSmallStr> = view
                .frame
                .get_column_names()
                .into_iter()
                .skip(1)
                .cloned()
                .collect();
            parts.push(view.frame.select(names).map_err(|e| e.to_string())?.lazy());
        }
    }
    if parts.is_empty() {
        return Err("no snapshot to take the columns from".into());
    }
    // One row of nulls after the snapshots' rows: a row that finds nothing takes it, so every
    // index is a plain one. Numeric columns are then copied by index (`take_numeric`), others
    // taken by polars with plain indices; its per-element path for nullable indices was most
    // of a training set's gather time (10 columns x 1M rows).
    let schema = parts[0]
        .clone()
        .collect_schema()
        .map_err(|e| e.to_string())?;
    let nulls = DataFrame::new(
        1,
        schema
            .iter()
            .map(|(name, dtype)| Column::full_null(name.clone(), 1, dtype))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    parts.push(nulls.lazy());
    let all = concat(
        parts,
        UnionArgs {
            to_supertypes: true,
            diagonal: true,
            rechunk: true,
            ..Default::default()
        },
    )
    .and_then(|lf| lf.collect())
    .map_err(|e| e.to_string())?;
    let null_row = total;
    let mut present = Vec::with_capacity(positions.len());
    let indices: Vec<IdxSize> = entity
        .iter()
        .zip(positions)
        .map(|(id, position)| {
            let found = match (id, position) {
                (Some(id), Some(p)) => views[*p as usize]
                    .as_ref()
                    .and_then(|v| v.rows.get(id).map(|r| offsets[*p as usize] + *r as IdxSize)),
                _ => None,
            };
            present.push(found.is_some());
            found.unwrap_or(null_row)
        })
        .collect();
    let found = BooleanChunked::from_slice(PlSmallStr::from_static("found"), &present);
    let mut taken = None;
    let mut columns = Vec::with_capacity(all.width());
    for column in all.columns() {
        let series = column.as_materialized_series();
        let fast = match series.dtype() {
            DataType::Float64 => take_numeric(series.f64(), &indices, &found),
            DataType::Float32 => take_numeric(series.f32(), &indices, &found),
            DataType::Int64 => take_numeric(series.i64(), &indices, &found),
            DataType::Int32 => take_numeric(series.i32(), &indices, &found),
            DataType::UInt32 => take_numeric(series.u32(), &indices, &found),
            DataType::UInt64 => take_numeric(series.u64(), &indices, &found),
            _ => None,
        };
        let column = match fast {
            Some(column) => column,
            None => {
                let indices = taken.get_or_insert_with(|| {
                    IdxCa::from_vec(PlSmallStr::from_static("idx"), indices.clone())
                });
                series
                    .take(indices)
                    .map_err(|e| e.to_string())?
                    .into_column()
            }
        };
        columns.push(column);
    }
    let gathered = DataFrame::new(indices.len(), columns).map_err(|e| e.to_string())?;
    Ok((gathered, present))
}

/// `source[indices]`, null where `found` is false, for a numeric column in one chunk whose only
/// null is the appended null row: a plain indexed copy, then one vectorized select for the
/// nulls. `None` (polars' take instead) for any other shape.
fn take_numeric<T: PolarsNumericType>(
    source: PolarsResult<&ChunkedArray<T>>,
    indices: &[IdxSize],
    found: &BooleanChunked,
) -> Option<Column> {
    let source = source.ok()?;
    if source.chunks().len() != 1 || source.null_count() > 1 {
        return None;
    }
    let values = source.downcast_iter().next()?.values().as_slice();
    let gathered: Vec<T::Native> = indices
        .iter()
        .map(|&i| values.get(i as usize).copied())
        .collect::<Option<_>>()?;
    let gathered = ChunkedArray::<T>::from_vec(source.name().clone(), gathered);
    let nulls = ChunkedArray::<T>::full_null(source.name().clone(), indices.len());
    let masked = gathered.zip_with(found, &nulls).ok()?;
    Some(masked.into_series().into_column())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot's row of each entity, keyed by its `k` column.
    fn index(f: &DataFrame) -> PlHashMap<String, u32> {
        f.column("k")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, k)| (k.unwrap().to_string(), i as u32))
            .collect()
    }

    #[test]
    fn each_row_gets_the_last_snapshot_valid_at_or_before_it_within_max_age() {
        let valid_from = [10, 20, 20, 30];
        let rows = [5, 10, 19, 20, 29, 30, 100];
        assert_eq!(
            snapshot_positions(&rows, &valid_from, None),
            [None, Some(0), Some(0), Some(2), Some(2), Some(3), Some(3)]
        );
        assert_eq!(
            snapshot_positions(&rows, &valid_from, Some(9)),
            [None, Some(0), Some(0), Some(2), Some(2), Some(3), None]
        );
    }

    #[test]
    fn gathered_rows_are_null_where_the_entity_or_snapshot_is_missing() {
        let a = df!("k" => ["u1", "u2"], "v" => [1.0, 2.0]).unwrap();
        let b = df!("k" => ["u1"], "v" => [10.0]).unwrap();
        let (ia, ib) = (index(&a), index(&b));
        let views = [
            Some(SnapshotView {
                frame: &a,
                rows: &ia,
            }),
            Some(SnapshotView {
                frame: &b,
                rows: &ib,
            }),
        ];
        let entity = StringChunked::from_iter_options(
            PlSmallStr::from_static("e"),
            [Some("u2"), Some("u2"), Some("u1"), Some("u1")].into_iter(),
        );
        let positions = [Some(0), Some(1), Some(1), None];
        let (frame, present) = gather(&entity, &positions, &views).unwrap();
        let v: Vec<Option<f64>> = frame.column("v").unwrap().f64().unwrap().iter().collect();
        assert_eq!(v, [Some(2.0), None, Some(10.0), None]);
        assert_eq!(present, [true, false, true, false]);
    }

    /// The plain-copy path (numeric columns without nulls) and polars' take (a column with its
    /// own nulls, text) give the same answer as looking each row up by hand.
    #[test]
    fn every_column_shape_gathers_what_a_lookup_by_hand_finds() {
        let a = df!(
            "k" => ["u1", "u2", "u3"],
            "f" => [1.5, 2.5, 3.5],
            "i" => [Some(1i64), None, Some(3)],
            "u" => [7u32, 8, 9],
            "s" => ["a", "b", "c"]
        )
        .unwrap();
        let b = df!(
            "k" => ["u3", "u1"],
            "f" => [30.5, 10.5],
            "i" => [Some(30i64), Some(10)],
            "u" => [90u32, 70],
            "s" => ["cc", "aa"]
        )
        .unwrap();
        let (ia, ib) = (index(&a), index(&b));
        let frames = [&a, &b];
        let indexes = [&ia, &ib];
        let views = [
            Some(SnapshotView {
                frame: &a,
                rows: &ia,
            }),
            Some(SnapshotView {
                frame: &b,
                rows: &ib,
            }),
        ];
        let ids = ["u1", "u2", "u3", "u9", "u2", "u3", "u1"];
        let positions = [Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), None];
        let entity = StringChunked::from_iter_values(PlSmallStr::from_static("e"), ids.into_iter());
        let (frame, present) = gather(&entity, &positions, &views).unwrap();
        for name in ["f", "i", "u", "s"] {
            let got = frame.column(name).unwrap().as_materialized_series().clone();
            for (row, (id, position)) in ids.iter().zip(positions).enumerate() {
                let want = position.and_then(|p| {
                    indexes[p as usize].get(*id).map(|r| {
                        frames[p as usize]
                            .column(name)
                            .unwrap()
                            .get(*r as usize)
                            .unwrap()
                            .into_static()
                    })
                });
                let want = want.unwrap_or(AnyValue::Null);
                assert_eq!(
                    got.get(row).unwrap().into_static(),
                    want,
                    "{name} row {row}"
                );
            }
        }
        assert_eq!(present, [true, true, true, false, false, true, false]);
    }
}
