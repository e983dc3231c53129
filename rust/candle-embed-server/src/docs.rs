//! The API described for people and tools: an OpenAPI 3.0 document (`/openapi.json`) and a
//! self-contained HTML page (`/docs`) that renders it without any CDN.
//!
//! The schemas are generated (schemars) from the types the server parses and writes — the
//! engine's `EmbeddingRequest`, [`EmbeddingsBody`], the response and error bodies — so a field
//! added to a type appears here with its description; the limits of the loaded models
//! (dimensions, vocabulary, inputs per request) are filled in when the document is served.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use candle_embed_engine::request::{self, SchemaBounds};

use crate::body::EmbeddingsBody;
use crate::error::ErrorBody;

/// The schema of `T` (its subschemas inline).
fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    let mut schema = generator.root_schema_for::<T>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
    }
    schema
}

/// The `/v1/embeddings` body: the engine request's fields, bounded, and HTTP's own.
fn embeddings_request(generator: &mut SchemaGenerator, bounds: &SchemaBounds) -> Value {
    let mut schema = request::schema(bounds);
    schema
        .as_object_mut()
        .map(|o| o.remove("$schema").and(o.remove("title")));
    let http = schema_of::<EmbeddingsBody>(generator);
    if let (Some(props), Some(extra)) = (
        schema.get_mut("properties").and_then(Value::as_object_mut),
        http.get("properties").and_then(Value::as_object),
    ) {
        props.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    schema
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A POST route's description: request and response schemas by name, what a 400 means.
fn post_operation(
    summary: &str,
    schemas: (&str, &str),
    example: Value,
    ok: &str,
    bad: &str,
    unavailable: &Value,
) -> Value {
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    json!({
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": reference(schemas.0),
            "example": example
        }}},
        "responses": {
            "200": json_response(ok, reference(schemas.1)),
            "400": error_response(bad),
            "404": error_response("Unknown model, or no model of this kind served."),
            "408": error_response("The body did not arrive within --body-timeout; the connection is closed."),
            "413": error_response("Body larger than --payload-limit."),
            "415": error_response("A Content-Encoding other than identity (send the body uncompressed)."),
            "429": error_response("Queue full (--max-concurrent-requests, --max-tokens-in-flight or --max-body-bytes-in-flight); see Retry-After."),
            "500": error_response("The model failed on a valid request."),
            "503": unavailable
        }
    })
}

fn rerank_operation(unavailable: &Value) -> Value {
    post_operation(
        "Score documents against a query with a Qwen3-Reranker (Cohere / Jina shape)",
        ("RerankRequest", "RerankResponse"),
        json!({"query": "What is the capital of China?", "documents": ["Beijing is the capital of China.", "Gravity pulls."], "top_n": 1}),
        "Results best first.",
        "Malformed body, wrong types, no documents, top_n below 1, too many documents, or the model named is not a reranker.",
        unavailable,
    )
}

fn score_operation(unavailable: &Value) -> Value {
    post_operation(
        "Score text pairs with a Qwen3-Reranker (vLLM's score API)",
        ("ScoreRequest", "ScoreResponse"),
        json!({"text_1": "What is the capital of China?", "text_2": ["Beijing is the capital of China.", "Gravity pulls."]}),
        "One score per pair, in order.",
        "Malformed body, wrong types, lists of different lengths, too many pairs, or the model named is not a reranker.",
        unavailable,
    )
}

/// What the loaded models accept, so that the document promises no more than the server does.
/// `None` in [`openapi`] while the models load (every route then answers 503).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Served names of the embedding models, in order.
    pub embedding: Vec<String>,
    /// Served names of the rerankers, in order.
    pub rerankers: Vec<String>,
    /// Every `prompt_name` some embedding model defines.
    pub prompt_names: Vec<String>,
}

impl Catalog {
    /// The `model` field of a route that serves `ours`: with one such model any name picks it
    /// (clients copy names from other servers' docs) except a name of the other kind; with
    /// several, one of their names, or "default" / "" / null for the first.
    fn model_field(ours: &[String], others: &[String], description: &Value) -> Value {
        let mut field = json!({"type": "string", "nullable": true, "description": description});
        if ours.len() > 1 {
            let mut names: Vec<Value> = ours.iter().map(|n| json!(n)).collect();
            names.extend([json!("default"), json!(""), Value::Null]);
            field["enum"] = Value::Array(names);
        } else if !others.is_empty() {
            field["not"] = json!({"enum": others});
        }
        field
    }
}

/// At most `max` documents, or pairs, per rerank or score request (--max-client-batch-size).
fn bound_rerank_lists(document: &mut Value, max: usize) {
    let schemas = &mut document["components"]["schemas"];
    schemas["RerankRequest"]["properties"]["documents"]["maxItems"] = max.into();
    for text in ["text_1", "text_2"] {
        for shape in schemas["ScoreRequest"]["properties"][text]["anyOf"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter(|shape| shape["type"] == "array")
        {
            shape["maxItems"] = max.into();
        }
    }
}

/// Narrows the request schemas to what `catalog`'s models accept and drops the routes of a kind
/// no model serves (they would only answer 404).
fn narrow_to(document: &mut Value, catalog: &Catalog) {
    let schemas = &mut document["components"]["schemas"];
    for (schema, ours, others) in [
        ("EmbeddingsRequest", &catalog.embedding, &catalog.rerankers),
        ("RerankRequest", &catalog.rerankers, &catalog.embedding),
        ("ScoreRequest", &catalog.rerankers, &catalog.embedding),
    ] {
        let model = &mut schemas[schema]["properties"]["model"];
        *model = Catalog::model_field(ours, others, &model["description"].clone());
    }
    let prompt = &mut schemas["EmbeddingsRequest"]["properties"]["prompt_name"];
    let mut names: Vec<Value> = catalog.prompt_names.iter().map(|n| json!(n)).collect();
    names.push(Value::Null);
    prompt["enum"] = Value::Array(names);
    let paths = document["paths"]
        .as_object_mut()
        .expect("paths is an object");
    if catalog.embedding.is_empty() {
        paths.remove("/v1/embeddings");
    }
    if catalog.rerankers.is_empty() {
        for path in ["/v1/rerank", "/rerank", "/v1/score", "/score"] {
            paths.remove(path);
        }
    }
}

/// The OpenAPI 3.0 description of every route, as this server runs: requests bounded by
/// `bounds` and narrowed to `catalog`'s models, bearer security when `auth`.
pub fn openapi(bounds: &SchemaBounds, catalog: Option<&Catalog>, auth: bool) -> Value {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let request = embeddings_request(&mut generator, bounds);
    let response = schema_of::<crate::api::EmbeddingsResponse<'static>>(&mut generator);
    let error = schema_of::<ErrorBody>(&mut generator);
    let mut schemas = Map::new();
    schemas.insert("EmbeddingsRequest".into(), request);
    schemas.insert("EmbeddingsResponse".into(), response);
    schemas.insert("ErrorBody".into(), error);
    let mut rerank_request = schema_of::<candle_embed_engine::RerankRequest>(&mut generator);
    let model = schema_of::<crate::rerank::ModelField>(&mut generator);
    if let (Some(props), Some(extra)) = (
        rerank_request
            .get_mut("properties")
            .and_then(Value::as_object_mut),
        model.get("properties").and_then(Value::as_object),
    ) {
        props.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    schemas.insert("RerankRequest".into(), rerank_request);
    schemas.insert(
        "RerankResponse".into(),
        schema_of::<crate::rerank::RerankResponse>(&mut generator),
    );
    schemas.insert(
        "ScoreRequest".into(),
        schema_of::<crate::rerank::ScoreBody>(&mut generator),
    );
    schemas.insert(
        "ScoreResponse".into(),
        schema_of::<crate::rerank::ScoreResponse>(&mut generator),
    );

    let secured = |mut operation: Value| {
        if auth {
            operation["security"] = json!([{"bearer": []}]);
            operation["responses"]["401"] = error_response("Missing or wrong API key.");
        }
        operation
    };
    let unavailable = error_response("Models still loading, or shutting down.");
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "candle-embed",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OpenAI-compatible embeddings for Qwen3-Embedding models, with dynamic batching."
        },
        "components": {"schemas": schemas},
        "paths": {
            "/v1/embeddings": {"post": secured(post_operation(
                "Embed texts or token ids",
                ("EmbeddingsRequest", "EmbeddingsResponse"),
                json!({"model": "default", "input": ["Graphene conductivity", "Explain superconductors in simple terms."]}),
                "One vector per input, in input order.",
                "Malformed body, wrong types, empty input, dimensions out of range, token ids outside the vocabulary, input too long, too many inputs, or the model named is a reranker.",
                &unavailable,
            ))},
            "/v1/rerank": {"post": secured(rerank_operation(&unavailable))},
            "/rerank": {"post": secured(rerank_operation(&unavailable))},
            "/v1/score": {"post": secured(score_operation(&unavailable))},
            "/score": {"post": secured(score_operation(&unavailable))},
            "/v1/models": {"get": secured(json!({
                "summary": "Served models",
                "responses": {
                    "200": json_response("{\"object\": \"list\", \"data\": [{\"id\", \"max_model_len\", ...}]}", json!({"type": "object"})),
                    "503": unavailable
                }
            }))},
            "/health": {"get": {"summary": "200 once the models are loaded", "responses": {
                "200": json_response("Ready", json!({"type": "object"})),
                "503": unavailable}}},
            "/info": {"get": {"summary": "Models, dimensions, limits, version", "responses": {
                "200": json_response("Server information", json!({"type": "object"})),
                "503": unavailable}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": json_response("OpenAPI 3", json!({"type": "object"}))}}},
            "/docs": {"get": {"summary": "This API as a web page", "responses": {"200": {"description": "HTML",
                "content": {"text/html": {"schema": {"type": "string"}}}}}}}
        }
    });
    if auth {
        document["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
    }
    if let Some(max) = bounds.max_inputs {
        bound_rerank_lists(&mut document, max);
    }
    if let Some(catalog) = catalog {
        narrow_to(&mut document, catalog);
    }
    request::admit_null_in_nullable_enums(&mut document["components"]["schemas"]);
    document
}

/// A browsable page: renders `/openapi.json` and lets one try `/v1/embeddings`; no external assets.
pub const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>candle-embed API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:0}.op{border:1px solid #ccc;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4rem;font-weight:bold}.post{color:#2a7}.get{color:#27a}
pre,textarea{background:#f6f6f6;padding:.5rem;border-radius:4px;overflow:auto;font-size:.85rem}
textarea{width:100%;height:8rem;font-family:monospace}table{border-collapse:collapse}
td,th{border-bottom:1px solid #eee;padding:.2rem .6rem;text-align:left;vertical-align:top}
</style></head><body>
<h1>candle-embed</h1><p id="desc"></p>
<div id="ops"></div>
<h2>Try it</h2>
<p>API key (if the server has one): <input id="key" type="password" size="30"></p>
<textarea id="body">{"model": "default", "input": ["Graphene conductivity", "Explain superconductors in simple terms."]}</textarea>
<p><button id="send">POST /v1/embeddings</button></p><pre id="out"></pre>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
fetch('/openapi.json').then(r=>r.json()).then(spec=>{
  document.getElementById('desc').textContent=spec.info.description+' Version '+spec.info.version+'.';
  const schemas=spec.components.schemas;let html='';
  for(const [path,ops] of Object.entries(spec.paths)){for(const [method,op] of Object.entries(ops)){
    html+='<div class="op"><span class="m '+method+'">'+method.toUpperCase()+'</span> <code>'+esc(path)+'</code> — '+esc(op.summary);
    if(op.requestBody){const props=schemas.EmbeddingsRequest.properties;html+='<table><tr><th>field</th><th>description</th></tr>';
      for(const [k,v] of Object.entries(props)){html+='<tr><td><code>'+esc(k)+'</code></td><td>'+esc(v.description||v.type||'')+(v.enum?' ('+esc(v.enum.join(', '))+')':'')+'</td></tr>';}
      html+='</table>';}
    html+='<table>';for(const [code,r] of Object.entries(op.responses)){html+='<tr><td>'+esc(code)+'</td><td>'+esc(r.description)+'</td></tr>';}
    html+='</table></div>';}}
  document.getElementById('ops').innerHTML=html;});
document.getElementById('send').onclick=async()=>{
  const headers={'Content-Type':'application/json'};const key=document.getElementById('key').value;
  if(key)headers['Authorization']='Bearer '+key;
  const r=await fetch('/v1/embeddings',{method:'POST',headers,body:document.getElementById('body').value});
  document.getElementById('out').textContent=r.status+'\n'+JSON.stringify(await r.json(),null,2);};
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_embed_engine::Limits;

    fn bounds() -> SchemaBounds {
        SchemaBounds {
            limits: Some(Limits {
                max_length: 128,
                vocab_size: 1024,
                hidden_size: 64,
            }),
            max_inputs: Some(16),
        }
    }

    #[test]
    fn the_body_is_the_engine_request_plus_http_fields() {
        let doc = openapi(&bounds(), None, false);
        let body = &doc["components"]["schemas"]["EmbeddingsRequest"];
        let engine = request::schema(&bounds());
        for (field, schema) in engine["properties"].as_object().unwrap() {
            assert_eq!(&body["properties"][field], schema, "{field}");
        }
        for field in ["model", "encoding_format", "user"] {
            assert!(
                body["properties"][field]["description"].is_string(),
                "{field}"
            );
        }
        assert_eq!(
            body["properties"]["encoding_format"]["enum"],
            json!(["float", "base64", null])
        );
    }

    #[test]
    fn routes_and_names_follow_the_models_served() {
        let catalog = Catalog {
            embedding: vec!["e".into()],
            rerankers: vec![],
            prompt_names: vec!["query".into()],
        };
        let doc = openapi(&bounds(), Some(&catalog), false);
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/v1/embeddings"));
        assert!(!paths.contains_key("/v1/rerank") && !paths.contains_key("/score"));
        let props = &doc["components"]["schemas"]["EmbeddingsRequest"]["properties"];
        assert_eq!(props["prompt_name"]["enum"], json!(["query", null]));
        assert!(props["model"].get("enum").is_none() && props["model"].get("not").is_none());

        let both = Catalog {
            embedding: vec!["e1".into(), "e2".into()],
            rerankers: vec!["r".into()],
            prompt_names: vec![],
        };
        let doc = openapi(&bounds(), Some(&both), false);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["EmbeddingsRequest"]["properties"]["model"]["enum"],
            json!(["e1", "e2", "default", "", null])
        );
        assert_eq!(
            schemas["ScoreRequest"]["properties"]["model"]["not"],
            json!({"enum": ["e1", "e2"]})
        );
        assert_eq!(
            schemas["EmbeddingsRequest"]["properties"]["prompt_name"]["enum"],
            json!([null])
        );
    }

    #[test]
    fn security_only_with_a_key() {
        let open = openapi(&bounds(), None, false);
        assert!(open["components"].get("securitySchemes").is_none());
        assert!(open["paths"]["/v1/embeddings"]["post"]
            .get("security")
            .is_none());
        let keyed = openapi(&bounds(), None, true);
        assert!(keyed["components"]["securitySchemes"]["bearer"].is_object());
        for path in ["/v1/embeddings", "/v1/models"] {
            let op = keyed["paths"][path]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap();
            assert!(op["responses"]["401"].is_object(), "{path}");
        }
    }
}
