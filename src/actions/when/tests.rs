use super::*;
use crate::actions::context::tests::{delivery, enrichment};

fn with_instance<'a>(
    d: &'a crate::resources::WebhookDelivery,
    e: Option<&'a crate::asc::enrich::Enrichment>,
) -> EventContext<'a> {
    EventContext {
        delivery: d,
        enrichment: e,
    }
}

#[test]
fn an_expression_sees_the_event_and_the_enrichment() {
    let d = delivery("build-upload-complete");
    let e = enrichment("buildUploads-3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
    let ctx = with_instance(&d, Some(&e));
    let yes = r#"instance.platform == "IOS" && event.oldState == "PROCESSING" && event.type == "buildUploadStateUpdated""#;
    assert_eq!(evaluate(yes, &ctx, COST_LIMIT), Ok(true));
    assert_eq!(
        evaluate(r#"instance.platform == "MAC_OS""#, &ctx, COST_LIMIT),
        Ok(false)
    );
    assert_eq!(
        evaluate(
            r#"event.attributes.newState == "COMPLETE""#,
            &ctx,
            COST_LIMIT
        ),
        Ok(true)
    );
}

#[test]
fn without_enrichment_instance_is_null() {
    let d = delivery("build-upload-complete");
    let ctx = with_instance(&d, None);
    assert_eq!(evaluate("instance == null", &ctx, COST_LIMIT), Ok(true));
    let err = evaluate(r#"instance.platform == "IOS""#, &ctx, COST_LIMIT).unwrap_err();
    assert_eq!(err.reason(), "ExpressionError", "{err}");
}

#[test]
fn a_syntax_error_is_invalid_with_the_parsers_message() {
    let err = compile(r#"event.type == "#).unwrap_err();
    assert_eq!(err.reason(), "InvalidRuleExpression");
    assert!(err.to_string().contains("invalid CEL expression"), "{err}");
}

#[test]
fn a_non_bool_result_is_an_error() {
    let d = delivery("build-upload-complete");
    let err = evaluate("event.type", &with_instance(&d, None), COST_LIMIT).unwrap_err();
    assert!(matches!(err, WhenError::NotBool(_)), "{err}");
}

#[test]
fn nested_comprehensions_multiply_and_are_refused_over_the_limit() {
    let d = delivery("build-upload-complete");
    let ctx = with_instance(&d, None);
    let list = format!(
        "[{}]",
        (0..60).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let one = format!("{list}.all(a, a >= 0)");
    assert_eq!(evaluate(&one, &ctx, COST_LIMIT), Ok(true));
    let three = format!("{list}.all(a, {list}.all(b, {list}.all(c, a + b + c >= 0)))");
    let err = evaluate(&three, &ctx, COST_LIMIT).unwrap_err();
    assert_eq!(err.reason(), "ExpressionCostExceeded", "{err}");
    let WhenError::CostExceeded { cost, .. } = err else {
        unreachable!()
    };
    assert!(cost > 60 * 60 * 60, "{cost}");
}

#[test]
fn the_bound_grows_with_the_actual_size_of_the_inputs() {
    let program = compile("event.attributes.all(k, instance.attributes.all(j, true))").unwrap();
    let small = Sizes {
        collection: 3,
        string: 10,
    };
    let large = Sizes {
        collection: 1_000,
        string: 10,
    };
    let (s, l) = (
        cost(program.expression(), &small),
        cost(program.expression(), &large),
    );
    assert!(s < 100, "{s}");
    assert!(l > 1_000_000, "{l}");
    let measured = Sizes::of(&[&serde_json::json!({"a": [1, 2, 3, 4], "b": "xyz"})]);
    assert_eq!((measured.collection, measured.string), (4, 3));
}
