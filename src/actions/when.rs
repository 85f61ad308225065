//! A rule's `when`: a CEL expression over `event` and `instance`, with a cost bound.
//!
//! The CEL interpreter has no cost limit of its own, so the bound is computed before evaluating, from the
//! parsed expression and the actual inputs: every node costs one, a comprehension (`all`, `exists`,
//! `exists_one`, `map`, `filter`) costs its body times the length of what it iterates, so nesting
//! multiplies. The length of a list literal is known; anything read from the inputs is taken to be as
//! long as the longest list or map in them. String functions cost in proportion to the longest string
//! of the inputs. An expression whose bound exceeds [`COST_LIMIT`] is refused without running, so no
//! expression can hold a reconcile for long.

use super::EventContext;
use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, IdedExpr, Program, Value};
use serde_json::Value as Json;

/// The largest cost bound an expression may have. A filter on a few fields costs under 50; iterating
/// the attributes of an object with nested checks costs a few thousand.
pub const COST_LIMIT: u64 = 100_000;

/// Why a `when` did not give an answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WhenError {
    /// Not a valid CEL expression.
    #[error("invalid CEL expression: {0}")]
    Invalid(String),
    /// The bound on its cost exceeds the limit.
    #[error("the expression's cost bound is {cost} for these inputs, over the limit of {limit}")]
    CostExceeded {
        /// The computed bound.
        cost: u64,
        /// The limit.
        limit: u64,
    },
    /// Evaluation failed (a missing field, a type mismatch).
    #[error("evaluating the expression failed: {0}")]
    Failed(String),
    /// It gave something other than true or false.
    #[error("the expression gave {0}, not a bool")]
    NotBool(String),
}

impl WhenError {
    /// The reason word for a status.
    pub fn reason(&self) -> &'static str {
        match self {
            WhenError::Invalid(_) => "InvalidRuleExpression",
            WhenError::CostExceeded { .. } => "ExpressionCostExceeded",
            WhenError::Failed(_) | WhenError::NotBool(_) => "ExpressionError",
        }
    }
}

/// Compiles `source`; the error message says where it went wrong.
pub fn compile(source: &str) -> Result<Program, WhenError> {
    // A panic in the parser on some odd input must not take the operator down.
    std::panic::catch_unwind(|| Program::compile(source))
        .map_err(|_| WhenError::Invalid("the parser could not read it".into()))?
        .map_err(|e| WhenError::Invalid(e.to_string().replace('\n', "; ")))
}

/// The CEL inputs of an event: `event` (with the payload's `attributes`) and `instance` (null without
/// enrichment).
pub fn inputs(event: &EventContext<'_>) -> (Json, Json) {
    let mut values = event.template_values();
    let mut ev = values["event"].take();
    let attributes = serde_json::from_str::<Json>(&event.delivery.spec.payload)
        .ok()
        .and_then(|p| p.pointer("/data/attributes").cloned())
        .unwrap_or(Json::Null);
    ev["attributes"] = attributes;
    (ev, values["instance"].take())
}

/// Evaluates `source` for the event, refusing it unrun when its cost bound is over `limit`.
pub fn evaluate(source: &str, event: &EventContext<'_>, limit: u64) -> Result<bool, WhenError> {
    let (ev, instance) = inputs(event);
    evaluate_with(source, [("event", ev), ("instance", instance)], limit)
}

/// Evaluates `source` with the named JSON `variables` (a resource action's `object`, say), refusing it
/// unrun when its cost bound for them is over `limit`.
pub fn evaluate_with<const N: usize>(
    source: &str,
    variables: [(&str, Json); N],
    limit: u64,
) -> Result<bool, WhenError> {
    let program = compile(source)?;
    let values: Vec<&Json> = variables.iter().map(|(_, v)| v).collect();
    let sizes = Sizes::of(&values);
    let cost = cost(program.expression(), &sizes);
    if cost > limit {
        return Err(WhenError::CostExceeded { cost, limit });
    }
    let mut ctx = Context::default();
    for (name, value) in variables {
        let v = cel::to_value(value).map_err(|e| WhenError::Failed(e.to_string()))?;
        ctx.add_variable_from_value(name, v);
    }
    match program.execute(&ctx) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(WhenError::NotBool(format!("{other:?}"))),
        Err(e) => Err(WhenError::Failed(e.to_string())),
    }
}

/// The largest collection and string in the inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    /// Elements of the longest list or map.
    pub collection: u64,
    /// Bytes of the longest string.
    pub string: u64,
}

impl Sizes {
    /// Measures `values`.
    pub fn of(values: &[&Json]) -> Sizes {
        let mut s = Sizes::default();
        let mut stack: Vec<&Json> = values.to_vec();
        while let Some(v) = stack.pop() {
            match v {
                Json::Array(a) => {
                    s.collection = s.collection.max(a.len() as u64);
                    stack.extend(a);
                }
                Json::Object(o) => {
                    s.collection = s.collection.max(o.len() as u64);
                    stack.extend(o.values());
                }
                Json::String(t) => s.string = s.string.max(t.len() as u64),
                _ => {}
            }
        }
        s
    }
}

const STRING_FUNCTIONS: &[&str] = &["contains", "startsWith", "endsWith", "matches", "size"];

/// An upper bound on the length of the list or map `e` evaluates to.
fn length(e: &IdedExpr, sizes: &Sizes) -> u64 {
    match &e.expr {
        Expr::List(l) => l.elements.len() as u64,
        Expr::Map(m) => m.entries.len() as u64,
        Expr::Call(c) if c.func_name == "_+_" => c
            .args
            .iter()
            .map(|a| length(a, sizes))
            .fold(0, u64::saturating_add),
        Expr::Comprehension(c) => length(&c.iter_range, sizes),
        _ => sizes.collection,
    }
}

/// An upper bound on the work of evaluating `e`.
pub fn cost(e: &IdedExpr, sizes: &Sizes) -> u64 {
    let sum = |items: &mut dyn Iterator<Item = &IdedExpr>| {
        items
            .map(|i| cost(i, sizes))
            .fold(0u64, u64::saturating_add)
    };
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => 1,
        Expr::Select(s) => 1 + cost(&s.operand, sizes),
        Expr::List(l) => 1 + sum(&mut l.elements.iter()),
        Expr::Map(m) => 1 + m_entries_cost(&m.entries, sizes),
        Expr::Struct(s) => 1 + m_entries_cost(&s.entries, sizes),
        Expr::Call(c) => {
            let mut own: u64 = 1;
            if c.func_name == "_+_" {
                // Concatenation copies both sides.
                own = own.saturating_add(c.args.iter().map(|a| length(a, sizes)).sum());
            }
            if STRING_FUNCTIONS.contains(&c.func_name.as_str()) || c.func_name == "_+_" {
                own = own.saturating_add(sizes.string / 64);
            }
            own.saturating_add(sum(&mut c.target.iter().map(|t| t.as_ref())))
                .saturating_add(sum(&mut c.args.iter()))
        }
        Expr::Comprehension(c) => {
            let per_item = cost(&c.loop_cond, sizes).saturating_add(cost(&c.loop_step, sizes));
            cost(&c.iter_range, sizes)
                .saturating_add(cost(&c.accu_init, sizes))
                .saturating_add(length(&c.iter_range, sizes).saturating_mul(per_item))
                .saturating_add(cost(&c.result, sizes))
        }
    }
}

fn m_entries_cost(entries: &[cel::common::ast::IdedEntryExpr], sizes: &Sizes) -> u64 {
    entries
        .iter()
        .map(|en| match &en.expr {
            EntryExpr::MapEntry(m) => cost(&m.key, sizes).saturating_add(cost(&m.value, sizes)),
            EntryExpr::StructField(f) => cost(&f.value, sizes),
        })
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests;
