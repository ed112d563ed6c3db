//! The SQL guard: a feature's SQL may only read the table `data` (and CTEs it defines).
//!
//! This is a security boundary, not a lint: polars' SQL engine has table functions
//! (`read_csv`, `read_parquet`, `read_ipc`, `read_json`) that read any file the server can, so
//! every relation anywhere in the statement (FROM, JOIN, parenthesised join, CTE, subquery) is
//! checked before the engine sees the text.
//!
//! Resource use is not this module's business: the SQL runs in a worker process whose memory
//! and time the kernel bounds, so joins of `data` with itself (a user's previous transaction)
//! are allowed.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserOptions};

/// The name under which the raw rows are registered with the engine.
pub const DATA_TABLE: &str = "data";
/// Longer SQL than this is refused before parsing.
pub const MAX_SQL_LEN: usize = 64 * 1024;

/// Functions a feature's SQL may not call, whatever the engine: on Spark, `reflect`,
/// `java_method` and `try_reflect` call static Java methods in the cluster (`System.exit`,
/// say), and the XPath functions parse XML whose entities could name local files.
const DENIED_FUNCTIONS: &[&str] = &[
    "reflect",
    "java_method",
    "try_reflect",
    "xpath",
    "xpath_boolean",
    "xpath_double",
    "xpath_float",
    "xpath_int",
    "xpath_long",
    "xpath_number",
    "xpath_short",
    "xpath_string",
    "read_files",
];

/// Parse `sql` exactly as polars will and refuse anything but one read-only SELECT over `data`.
pub fn check(sql: &str) -> Result<(), String> {
    if sql.trim().is_empty() {
        return Err("the SQL is empty".into());
    }
    if sql.len() > MAX_SQL_LEN {
        return Err(format!("the SQL is longer than {MAX_SQL_LEN} bytes"));
    }
    let statements = Parser::new(&GenericDialect)
        .with_options(ParserOptions {
            trailing_commas: true,
            ..Default::default()
        })
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| format!("SQL does not parse: {e}"))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err("the SQL is empty".into()),
        _ => return Err("only one SQL statement is allowed".into()),
    };
    let Statement::Query(query) = statement else {
        return Err("only SELECT queries are allowed".into());
    };
    if !is_plain_select(&query.body) {
        return Err("only SELECT queries are allowed".into());
    }
    let mut guard = Guard::default();
    match statement.visit(&mut guard) {
        ControlFlow::Break(reason) => Err(reason),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn is_plain_select(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_none(),
        SetExpr::Query(q) => is_plain_select(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            is_plain_select(left) && is_plain_select(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => true,
        _ => false,
    }
}

#[derive(Default)]
struct Guard {
    ctes: HashSet<String>,
}

fn single_name(name: &ObjectName) -> Option<&str> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident.value.as_str()),
        _ => None,
    }
}

impl Visitor for Guard {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        if !is_plain_select(&query.body) {
            return ControlFlow::Break("only SELECT queries are allowed".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        if let Expr::Function(f) = expr {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(ident)) => ident.value.to_ascii_lowercase(),
                _ => String::new(),
            };
            if DENIED_FUNCTIONS.contains(&name.as_str()) {
                return ControlFlow::Break(format!(
                    "the function {} is not allowed in a feature's SQL",
                    f.name
                ));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { name, args, .. } => {
                if args.is_some() {
                    return ControlFlow::Break(format!(
                        "table functions are not allowed (found {name})"
                    ));
                }
                match single_name(name) {
                    Some(n) if n == DATA_TABLE || self.ctes.contains(n) => {
                        ControlFlow::Continue(())
                    }
                    _ => ControlFlow::Break(format!(
                        "unknown table {name}: a feature's SQL can only read the table '{DATA_TABLE}'"
                    )),
                }
            }
            // Their inner relations are visited (and checked) in turn.
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(format!(
                "unsupported FROM item {other}: a feature's SQL can only read the table '{DATA_TABLE}'"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn a_group_by_over_data_is_allowed() {
        check("SELECT user_id, AVG(amount) AS avg_amount FROM data GROUP BY user_id").unwrap();
    }

    #[test]
    fn ctes_and_subqueries_over_data_are_allowed() {
        check(
            "WITH t AS (SELECT user_id, amount FROM data WHERE amount > 0) \
             SELECT user_id, SUM(amount) AS s FROM t \
             WHERE user_id IN (SELECT user_id FROM data) GROUP BY user_id",
        )
        .unwrap();
        check("SELECT user_id, amount - AVG(amount) OVER (PARTITION BY user_id) AS d FROM data")
            .unwrap();
    }

    #[test]
    fn joins_of_data_with_itself_and_its_ctes_are_allowed() {
        for sql in [
            "SELECT a.user_id FROM data a, data b",
            "SELECT a.user_id FROM data a CROSS JOIN data b",
            "SELECT a.user_id FROM data a JOIN data b ON a.user_id = b.user_id",
            "SELECT a.user_id FROM (data a CROSS JOIN data b)",
            "WITH x AS (SELECT user_id FROM data) SELECT a.user_id FROM (data a JOIN x ON a.user_id = x.user_id)",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn a_parenthesised_join_is_checked_like_any_join() {
        for sql in [
            "SELECT * FROM (data a CROSS JOIN read_csv('/etc/passwd') b)",
            "SELECT * FROM (data a CROSS JOIN users b)",
            "SELECT * FROM ((data a JOIN data b ON true) JOIN read_parquet('/x') c ON true)",
            "SELECT * FROM (data a CROSS JOIN (SELECT * FROM read_ipc('/x')) b)",
        ] {
            assert!(check(sql).is_err(), "accepted: {sql}");
        }
    }

    #[test]
    fn every_file_reading_table_function_is_refused() {
        for f in ["read_csv", "read_parquet", "read_ipc", "read_json"] {
            let sql = format!("SELECT * FROM {f}('/etc/passwd')");
            let err = check(&sql).unwrap_err();
            assert!(
                err.contains("table functions are not allowed"),
                "{f}: {err}"
            );
        }
    }

    #[test]
    fn table_functions_are_refused_in_ctes_subqueries_and_joins() {
        for sql in [
            "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
            "SELECT * FROM data WHERE user_id IN (SELECT a FROM read_parquet('/x.parquet'))",
            "SELECT * FROM data JOIN read_ipc('/x.ipc') r ON true",
            "SELECT (SELECT MAX(a) FROM read_json('/x.json')) AS m FROM data",
            "SELECT * FROM (SELECT * FROM read_csv('/etc/passwd')) s",
        ] {
            assert!(check(sql).is_err(), "accepted: {sql}");
        }
    }

    #[test]
    fn functions_that_reach_outside_the_query_are_refused_anywhere() {
        for sql in [
            "SELECT user_id, reflect('java.lang.System', 'exit', 1) AS x FROM data",
            "SELECT user_id, MAX(JAVA_METHOD('java.lang.System', 'getenv', 'X')) FROM data GROUP BY user_id",
            "WITH t AS (SELECT try_reflect('a', 'b') AS r FROM data) SELECT * FROM t",
            "SELECT user_id FROM data WHERE xpath_string(user_id, '/a') = 'x'",
        ] {
            let err = check(sql).unwrap_err();
            assert!(err.contains("is not allowed"), "{sql}: {err}");
        }
        // Spark's script transform does not even parse here.
        assert!(check("SELECT TRANSFORM(user_id) USING 'cat /etc/passwd' FROM data").is_err());
    }

    #[test]
    fn other_tables_are_refused() {
        let err = check("SELECT * FROM users").unwrap_err();
        assert!(err.contains("unknown table users"), "{err}");
        assert!(check("SELECT * FROM public.data").is_err());
    }

    #[test]
    fn several_statements_are_refused() {
        let err = check("SELECT * FROM data; SELECT * FROM data").unwrap_err();
        assert_eq!(err, "only one SQL statement is allowed");
    }

    #[test]
    fn statements_other_than_select_are_refused() {
        for sql in [
            "DROP TABLE data",
            "CREATE TABLE x AS SELECT * FROM data",
            "INSERT INTO data VALUES (1)",
            "SHOW TABLES",
            "COPY data TO '/tmp/x.csv'",
            "SELECT * INTO y FROM data",
            "EXPLAIN SELECT * FROM data",
        ] {
            assert!(check(sql).is_err(), "accepted: {sql}");
        }
    }

    #[test]
    fn garbage_and_empty_sql_are_refused() {
        assert!(check("").is_err());
        assert!(check("   ").is_err());
        assert!(check("SELEC user_id FROM data").is_err());
        assert!(check(&"(".repeat(10_000)).is_err());
    }
}
