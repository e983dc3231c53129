//! The API described for people and tools: a hand-written OpenAPI 3 document (`/openapi.json`)
//! and a self-contained HTML page (`/docs`) that renders it without any CDN.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// The request, response and error bodies.
fn schemas() -> Value {
    let token_ids = json!({"type": "array", "items": {"type": "integer", "minimum": 0}});
    json!({
        "EmbeddingsRequest": {
            "type": "object",
            "required": ["input"],
            "properties": {
                "model": {"type": "string", "description": "Served model name; \"default\" picks the first."},
                "input": {
                    "description": "Text, texts, token ids, or lists of token ids.",
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}},
                        token_ids,
                        {"type": "array", "items": token_ids}
                    ]
                },
                "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float",
                    "description": "base64: little-endian float32 bytes."},
                "dimensions": {"type": "integer", "minimum": 1,
                    "description": "Keep the first N values (Matryoshka), then normalize."},
                "user": {"type": "string", "description": "Accepted and ignored."},
                "truncate_prompt_tokens": {"type": "integer",
                    "description": "Keep at most N tokens per input (-1: the model maximum)."},
                "truncation_side": {"type": "string", "enum": ["right", "left"], "default": "right"},
                "truncate_sequence": {"type": "boolean", "default": false,
                    "description": "Truncate inputs longer than the maximum instead of rejecting them."},
                "instruction": {"type": "string",
                    "description": "Each text becomes \"Instruct: {instruction}\\nQuery:{text}\"."},
                "prompt_name": {"type": "string",
                    "description": "A prompt from config_sentence_transformers.json, e.g. \"query\"."},
                "normalize": {"type": "boolean", "default": true}
            }
        },
        "EmbeddingsResponse": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["list"]},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "data": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "object": {"type": "string", "enum": ["embedding"]},
                        "embedding": {"oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "format": "byte"}
                        ]}
                    }
                }},
                "usage": {"type": "object", "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"}
                }}
            }
        },
        "ErrorBody": {
            "type": "object",
            "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": true},
                "code": {"type": "string", "nullable": true}
            }}}
        }
    })
}

/// The OpenAPI 3.0 description of every route.
pub fn openapi() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "candle-embed",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OpenAI-compatible embeddings for Qwen3-Embedding models, with dynamic batching."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": {
            "/v1/embeddings": {"post": {
                "summary": "Embed texts or token ids",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/EmbeddingsRequest"},
                    "example": {"model": "default", "input": ["Graphene conductivity", "Explain superconductors in simple terms."]}
                }}},
                "responses": {
                    "200": {"description": "One vector per input, in input order.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsResponse"}}}},
                    "400": error_response("Malformed body, wrong types, empty input, dimensions out of range, token ids outside the vocabulary, input too long, too many inputs."),
                    "401": error_response("Missing or wrong API key (when the server has one)."),
                    "404": error_response("Unknown model."),
                    "413": error_response("Body larger than --payload-limit."),
                    "429": error_response("Queue full (--max-concurrent-requests)."),
                    "503": error_response("Loading or shutting down.")
                }
            }},
            "/v1/models": {"get": {"summary": "Served models", "security": [{"bearer": []}],
                "responses": {"200": {"description": "{\"object\": \"list\", \"data\": [{\"id\", \"max_model_len\", ...}]}"}}}},
            "/health": {"get": {"summary": "200 once the models are loaded", "responses": {
                "200": {"description": "Ready"}, "503": error_response("Loading or shutting down")}}},
            "/info": {"get": {"summary": "Models, dimensions, limits, version", "responses": {"200": {"description": "Server information"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format",
                "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/docs": {"get": {"summary": "This API as a web page", "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}}
        }
    })
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
