//! Edits of an OpenAPI document for what utoipa's derive cannot say but the server enforces:
//! values known only when a service starts (the catalog's template names), and
//! `#[serde(deny_unknown_fields)]` on an internally tagged enum (utoipa closes structs, not the
//! variants of such an enum). Each edit names a component schema; a name or property the
//! document does not have is a programming error and panics when the router is built (tests
//! build every router).

use serde_json::Value;
use utoipa::openapi::schema::{AdditionalProperties, Schema, SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr};

fn component<'a>(doc: &'a mut OpenApi, name: &str) -> &'a mut Schema {
    let schema = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(name));
    match schema {
        Some(RefOr::T(schema)) => schema,
        _ => panic!("the OpenAPI document has no component schema `{name}`"),
    }
}

/// Refuses properties the component schema `name` does not declare (`additionalProperties:
/// false`), on the object itself or on every object variant of a `oneOf`.
pub fn deny_unknown_fields(doc: &mut OpenApi, name: &str) {
    fn close(schema: &mut Schema) {
        match schema {
            Schema::Object(o) => {
                o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
            Schema::OneOf(one) => {
                for item in &mut one.items {
                    if let RefOr::T(s) = item {
                        close(s);
                    }
                }
            }
            _ => {}
        }
    }
    close(component(doc, name));
}

/// Restricts property `property` of the object schema `name` to `values` (plus `null` when
/// the property is nullable).
pub fn set_enum(doc: &mut OpenApi, name: &str, property: &str, values: Vec<Value>) {
    let Schema::Object(o) = component(doc, name) else {
        panic!("component schema `{name}` is not an object");
    };
    let Some(RefOr::T(Schema::Object(p))) = o.properties.get_mut(property) else {
        panic!("component schema `{name}` has no plain property `{property}`");
    };
    let mut values = values;
    let nullable =
        matches!(&p.schema_type, SchemaType::Array(types) if types.contains(&Type::Null));
    if nullable {
        values.push(Value::Null);
    }
    p.enum_values = Some(values);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    #[allow(dead_code)]
    fn closes_variants_and_restricts_values() {
        #[derive(utoipa::ToSchema, serde::Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        enum Step {
            A { x: u32 },
            B { y: String },
        }
        #[derive(utoipa::ToSchema, serde::Deserialize)]
        struct Body {
            name: Option<String>,
            track: String,
        }
        #[derive(utoipa::OpenApi)]
        #[openapi(components(schemas(Step, Body)))]
        struct Doc;
        let mut doc = <Doc as utoipa::OpenApi>::openapi();
        deny_unknown_fields(&mut doc, "Step");
        set_enum(&mut doc, "Body", "name", vec![json!("a"), json!("b")]);
        set_enum(&mut doc, "Body", "track", vec![json!("t")]);
        let v = serde_json::to_value(&doc).unwrap();
        let schemas = &v["components"]["schemas"];
        for variant in schemas["Step"]["oneOf"].as_array().unwrap() {
            assert_eq!(variant["additionalProperties"], false, "{variant}");
        }
        assert_eq!(
            schemas["Body"]["properties"]["name"]["enum"],
            json!(["a", "b", null])
        );
        assert_eq!(schemas["Body"]["properties"]["track"]["enum"], json!(["t"]));
    }

    #[test]
    #[should_panic(expected = "no component schema `Nope`")]
    fn an_unknown_schema_is_a_bug() {
        deny_unknown_fields(&mut OpenApi::default(), "Nope");
    }
}
