//! What a query may be before DataFusion plans it: bounded in tokens and in expression depth.
//!
//! The planner and optimizer walk expressions recursively, so `SELECT 1+1+…+1` of a few hundred
//! terms overflowed a worker thread's stack (issue 19). The parser builds such left-deep chains
//! without recursion and DataFusion's own `sql_parser.recursion_limit` only bounds nesting in
//! parentheses and subqueries, so the gate counts what the parser built. The walk stops as soon
//! as a bound is passed: it never recurses deeper than [`MAX_DEPTH`] itself.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::QueryError;

/// Most tokens (words, literals, operators; not whitespace or comments) in one query. The API
/// takes bodies of 16 KiB, a few thousand tokens; the saved queries have at most a few hundred.
pub const MAX_TOKENS: usize = 10_000;
/// Deepest nesting of expressions and subqueries (`a OR b OR c` of n terms is n deep).
pub const MAX_DEPTH: usize = 256;

/// Refuses a query beyond the bounds with [`QueryError::TooComplex`]. Text that does not parse
/// is let through: the planner answers it with its own error.
pub fn check(sql: &str) -> Result<(), QueryError> {
    let dialect = GenericDialect {};
    // The tokenizer is a loop: counting tokens is safe for any input.
    if let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() {
        let n = tokens
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
            .count();
        if n > MAX_TOKENS {
            return Err(QueryError::TooComplex(format!(
                "{n} tokens; at most {MAX_TOKENS} are allowed"
            )));
        }
    }
    let Ok(statements) = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .build()
        .and_then(|mut p| p.parse_statements())
    else {
        return Ok(());
    };
    let mut walk = Walk::default();
    for statement in &statements {
        if let ControlFlow::Break(why) = walk.statement(statement) {
            return Err(QueryError::TooComplex(why));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Walk {
    depth: usize,
}

impl Walk {
    fn statement(&mut self, statement: &DfStatement) -> ControlFlow<String> {
        match statement {
            DfStatement::Statement(s) => s.visit(self),
            DfStatement::Explain(e) => self.statement(&e.statement),
            // Refused by the planner as statements that are not queries.
            DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {
                ControlFlow::Continue(())
            }
        }
    }

    fn enter(&mut self) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(format!(
                "expressions nested more than {MAX_DEPTH} deep (a long chain of AND, OR or + counts \
                 one level per term: use IN (…) or split the query)"
            ));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Walk {
    type Break = String;

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn refused(sql: &str) -> String {
        match check(sql) {
            Err(QueryError::TooComplex(why)) => why,
            other => panic!("{other:?} for a query of {} bytes", sql.len()),
        }
    }

    #[test]
    fn ordinary_and_saved_queries_pass() {
        for q in crate::replay::saved::all() {
            check(q.sql).unwrap_or_else(|e| panic!("{}: {e}", q.name));
        }
        check("SELECT identity, count(*) FROM events WHERE date >= '2026-01-01' GROUP BY 1").expect("simple");
        // A chain within the bound, and IN lists of any reasonable length.
        let chain = vec!["x = 1"; 200].join(" OR ");
        check(&format!("SELECT * FROM events WHERE {chain}")).expect("200 terms");
        let list = (0..3000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        check(&format!("SELECT * FROM events WHERE x IN ({list})")).expect("IN list");
        // Not SQL at all: the planner's error, not the gate's.
        check("SELEC 1").expect("unparsed text passes to the planner");
    }

    #[test]
    fn long_chains_deep_nesting_and_huge_texts_are_refused_before_planning() {
        // The probes of issue 19: a sum of 600 terms (a 1.2 KB body), 3,000 terms, 100k ORs.
        let sum = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
        assert!(refused(&sum(600)).contains("nested more than 256"));
        assert!(refused(&sum(3000)).contains("nested more than 256"));
        let ors = vec!["x = 1"; 100_000].join(" OR ");
        assert!(refused(&format!("SELECT * FROM events WHERE {ors}")).contains("tokens"));
        // Inside EXPLAIN and subqueries too.
        assert!(refused(&format!("EXPLAIN {}", sum(600))).contains("nested"));
        assert!(refused(&format!("SELECT * FROM events WHERE x IN ({})", sum(600))).contains("nested"));
        // The bound exactly: the query level and 255 terms are 256 deep; one more term is over.
        check(&sum(255)).expect("256 levels");
        assert!(refused(&sum(256)).contains("nested more than 256"));
        // Many shallow expressions: bounded by the token count.
        let wide = vec!["1"; 4_999].join(", ");
        check(&format!("SELECT {wide}")).expect("5k columns within bounds");
        let wide = vec!["1"; 5_001].join(", ");
        assert!(refused(&format!("SELECT {wide}")).contains("10002 tokens"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any text: an answer, never a panic.
        #[test]
        fn any_text_is_answered(sql in "\\PC{0,400}") {
            let _ = check(&sql);
        }

        /// SQL-shaped text built from SQL's own pieces, in any order.
        #[test]
        fn any_sql_shaped_text_is_answered(parts in prop::collection::vec(prop::sample::select(vec![
            "SELECT", "FROM", "WHERE", "(", ")", "1", "'a'", "+", "OR", "AND", "NOT", ",", "events",
            "identity", "IN", "CASE", "WHEN", "THEN", "END", "EXPLAIN", "[", "]", "::", "$x", "--",
        ]), 0..600)) {
            let _ = check(&parts.join(" "));
        }

        /// A chain of one operator: the query level and n terms make n + 1 levels.
        #[test]
        fn chains_are_refused_exactly_past_the_depth(n in 1usize..600, op in prop::sample::select(vec![" + ", " OR ", " AND ", " * ", " || "])) {
            let sql = format!("SELECT {}", vec!["x"; n].join(op));
            prop_assert_eq!(check(&sql).is_err(), n + 1 > MAX_DEPTH);
        }
    }
}
