//! HTTP body templates, rendered with MiniJinja.
//!
//! In JSON bodies every `{{ value }}` is written as the *content* of a JSON string: quotes, backslashes
//! and control characters are escaped and no quotes are added, so authors write ordinary JSON such as
//! `{"text": "Version {{ instance.version }} is live"}` and an event value can never break out of its
//! string. Lists and maps print as JSON. Missing values (`instance` without enrichment) print as nothing.
//! Fuel bounds rendering so a template cannot loop for ever, and the output is capped at
//! [`MAX_RENDERED_BYTES`] while it is written, so a loop or a repeated string fails the action with a
//! reason instead of growing the operator's memory. (MiniJinja itself refuses a single string repetition
//! over 100 MB; one below that is still built once before the cap refuses it.)

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, Output, State, UndefinedBehavior};

/// Rendering steps allowed per template, far above any sensible message body.
const FUEL: u64 = 100_000;

/// Largest rendered body. Webhook messages are a few KiB; chat services refuse far less.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Why a template was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl From<Error> for TemplateError {
    fn from(e: Error) -> Self {
        // The detail names the line and the problem, never context values.
        let mut msg = e.kind().to_string();
        if let Some(detail) = e.detail() {
            msg.push_str(": ");
            msg.push_str(detail);
        }
        if let Some(line) = e.line() {
            msg.push_str(&format!(" (line {line})"));
        }
        TemplateError(msg)
    }
}

fn environment(json: bool) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    if json {
        env.set_formatter(json_string_content);
    } else {
        env.set_formatter(|out, _state, value| {
            if !value.is_undefined() && !value.is_none() {
                write_str(out, &value.to_string())?;
            }
            Ok(())
        });
    }
    env
}

fn write_str(out: &mut Output, s: &str) -> Result<(), Error> {
    // Checked before a value is escaped or copied: a huge value fails here, not after three copies.
    if s.len() > MAX_RENDERED_BYTES {
        return Err(too_large());
    }
    out.write_str(s).map_err(Error::from)
}

fn too_large() -> Error {
    Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("the rendered body exceeds {MAX_RENDERED_BYTES} bytes"),
    )
}

/// The output buffer, refusing to grow past the cap.
struct Capped {
    buf: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered body too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_string_content(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => Ok(()),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let json = serde_json::to_string(value).map_err(|e| {
                Error::new(
                    minijinja::ErrorKind::BadSerialization,
                    "value cannot be written as JSON",
                )
                .with_source(e)
            })?;
            write_str(out, &escape_json_content(&json))
        }
        _ => {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            write_str(out, &escape_json_content(&text))
        }
    }
}

/// `s` as it would appear between the quotes of a JSON string.
fn escape_json_content(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Whether `content_type` asks for JSON escaping.
pub fn is_json(content_type: &str) -> bool {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || base.ends_with("+json")
}

/// Checks that `body` compiles, so a broken template makes the route not ready before any event needs it.
pub fn validate(body: &str) -> Result<(), TemplateError> {
    environment(false).template_from_str(body)?;
    Ok(())
}

/// Renders `body` with `context` (a JSON object of `event`, `instance`, `route`).
pub fn render(
    body: &str,
    context: &serde_json::Value,
    json: bool,
) -> Result<String, TemplateError> {
    let env = environment(json);
    let template = env.template_from_str(body)?;
    let mut out = Capped {
        buf: Vec::new(),
        overflowed: false,
    };
    match template.render_captured_to(Value::from_serialize(context), &mut out) {
        Ok(_) => {}
        Err(_) if out.overflowed => {
            return Err(TemplateError(format!(
                "the rendered body exceeds {MAX_RENDERED_BYTES} bytes"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    String::from_utf8(out.buf).map_err(|_| TemplateError("the rendered body is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_bodies_escape_values_inside_strings() {
        let ctx = json!({"event": {"newState": "FAILED"}, "instance": {"errorsText": "ITMS-90683: \"quoted\"\nnext"}});
        let out = render(
            r#"{"text": "{{ event.newState }}: {{ instance.errorsText }}"}"#,
            &ctx,
            true,
        )
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["text"], "FAILED: ITMS-90683: \"quoted\"\nnext");
    }

    #[test]
    fn a_value_cannot_break_out_of_its_json_string() {
        let ctx = json!({"event": {"id": "\", \"injected\": true, \"x\": \""}});
        let out = render(r#"{"id": "{{ event.id }}"}"#, &ctx, true).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(parsed.get("injected").is_none());
        assert_eq!(parsed["id"], ctx["event"]["id"]);
    }

    #[test]
    fn missing_instance_renders_as_nothing_and_can_be_tested() {
        let ctx = json!({"event": {"type": "x"}});
        let out = render(
            r#"{"v": "{{ instance.version }}"{% if instance %}, "e": 1{% endif %}}"#,
            &ctx,
            true,
        )
        .unwrap();
        assert_eq!(out, r#"{"v": ""}"#);
    }

    #[test]
    fn lists_print_as_json_text() {
        let ctx = json!({"instance": {"errors": ["a", "b"]}});
        let out = render(r#"{"e": "{{ instance.errors }}"}"#, &ctx, true).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["e"], r#"["a","b"]"#);
    }

    #[test]
    fn plain_text_bodies_are_not_escaped() {
        let ctx = json!({"event": {"newState": "A\"B"}});
        assert_eq!(
            render("state={{ event.newState }}", &ctx, false).unwrap(),
            "state=A\"B"
        );
    }

    #[test]
    fn broken_templates_are_refused_with_the_line() {
        let err = validate("{\n\"text\": \"{{ event.newState \"}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line"), "{err}");
        assert!(validate(r#"{"text": "{{ event.newState }}"}"#).is_ok());
    }

    #[test]
    fn endless_templates_run_out_of_fuel() {
        let err = render(
            "{% for i in range(1000000) %}{{ i }}{% endfor %}",
            &json!({}),
            false,
        );
        assert!(err.is_err());
    }

    #[test]
    fn huge_output_fails_with_the_limit_in_the_reason() {
        for (body, json) in [
            (r#"{{ "x" * 100000000 }}"#, false),
            (r#"{"t": "{{ "x" * 100000000 }}"}"#, true),
            // Many small writes: caught by the capped output, not by the value check.
            (
                "{% for i in range(20000) %}{{ 'y' * 100 }}{% endfor %}",
                false,
            ),
        ] {
            let err = render(body, &json!({}), json).unwrap_err().to_string();
            assert!(err.contains("exceeds 1048576 bytes"), "{body}: {err}");
        }
        let fits = render("{{ 'z' * 1000 }}", &json!({}), false).unwrap();
        assert_eq!(fits.len(), 1000);
    }

    #[test]
    fn content_types_with_parameters_are_json() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/vnd.github+json"));
        assert!(!is_json("text/plain"));
    }
}
