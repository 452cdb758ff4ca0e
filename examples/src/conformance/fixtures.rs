//! The conformance server's fixed data: the tools, prompts and resources the suite's server
//! scenarios ask for, with the exact names, texts and schemas those scenarios check.

use std::sync::Arc;

use rmcp::{
    model::{
        JsonObject, Prompt, PromptArgument, Resource, ResourceContents, ResourceTemplate, Tool,
        ToolAnnotations,
    },
    object,
};

/// A 1×1 red PNG, base64-encoded.
pub(super) const RED_PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mP4z8AAAAMBAQD3A0FDAAAAAElFTkSuQmCC";
/// One millisecond of 16-bit mono silence at 8 kHz, as a base64-encoded WAV file.
pub(super) const SILENT_WAV: &str =
    "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA";

pub(super) const SIMPLE_TEXT: &str = "This is a simple text response for testing.";
pub(super) const TOOL_ERROR_TEXT: &str = "This tool intentionally returns an error for testing";

pub(super) const STATIC_TEXT_URI: &str = "test://static-text";
pub(super) const STATIC_TEXT: &str = "This is the content of the static text resource.";
pub(super) const STATIC_BINARY_URI: &str = "test://static-binary";
pub(super) const WATCHED_URI: &str = "test://watched-resource";
pub(super) const TEMPLATE_URI: &str = "test://template/{id}/data";
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

/// The tool the suite lists but which only exists after `test_trigger_tool_change`.
pub(super) const DYNAMIC_TOOL: &str = "test_dynamic_tool";
/// The prompt that only exists after `test_trigger_prompt_change`.
pub(super) const DYNAMIC_PROMPT: &str = "test_dynamic_prompt";

/// How a tool's result relates to its arguments, which decides its MCP annotations and so
/// what mcp-tower's layers may do with it (DESIGN §2).
#[derive(Clone, Copy)]
enum Kind {
    /// The result is a function of the arguments: `readOnlyHint` (cacheable, shareable,
    /// retryable). Multi-round-trip tools are here too: their continuations carry the
    /// client's answers, which the stack never caches or shares.
    Pure,
    /// The tool asks the client something (sampling, elicitation) in the middle of the call:
    /// no hints, so nothing is cached, shared or retried.
    Interactive,
    /// The tool changes the server (its tool or prompt list): `destructiveHint`.
    Mutating,
}

fn tool(name: &'static str, description: &'static str, kind: Kind, schema: JsonObject) -> Tool {
    let annotations = match kind {
        Kind::Pure => Some(ToolAnnotations::new().read_only(true).idempotent(true)),
        Kind::Interactive => None,
        Kind::Mutating => Some(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(false),
        ),
    };
    let tool = Tool::new(name, description, Arc::new(schema));
    match annotations {
        Some(a) => tool.with_annotations(a),
        None => tool,
    }
}

fn no_arguments() -> JsonObject {
    object!({ "type": "object", "properties": {} })
}

/// The JSON Schema 2020-12 input schema `json-schema-2020-12` checks keyword by keyword.
fn json_schema_2020_12() -> JsonObject {
    object!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
            }
        },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" }
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": { "properties": { "contactMethod": { "const": "phone" } }, "required": ["contactMethod"] },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false
    })
}

/// Every tool, in a stable order. `test_simple_text` comes first: the header-validation
/// scenario calls the first listed tool with no arguments and expects it to succeed.
pub(super) fn tools(with_dynamic_tool: bool) -> Vec<Tool> {
    use Kind::*;
    let mut tools = vec![
        tool(
            "test_simple_text",
            "Returns simple text content",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_image_content",
            "Returns image content",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_audio_content",
            "Returns audio content",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource content together",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_error_handling",
            "Always fails with a tool error (isError: true)",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three log notifications while it runs",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_logging_tool",
            "Sends log notifications only at the level the request asked for",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100 when the request carries a progress token",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM to answer a prompt (sampling/createMessage)",
            Interactive,
            object!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send" } },
                "required": ["prompt"]
            }),
        ),
        tool(
            "test_elicitation",
            "Asks the user for a username and an email (elicitation/create)",
            Interactive,
            object!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show" } },
                "required": ["message"]
            }),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation whose fields all have defaults (SEP-1034)",
            Interactive,
            no_arguments(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with the five enum schema variants (SEP-1330)",
            Interactive,
            no_arguments(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            Pure,
            json_schema_2020_12(),
        ),
        tool(
            "test_reconnection",
            "Takes a moment to answer (SSE polling, SEP-1699)",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_custom_headers",
            "Echoes a region sent both in the body and as the Mcp-Param-Region header (SEP-2243)",
            Pure,
            object!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "description": "A region name", "x-mcp-header": "Region" }
                },
                "required": ["region"]
            }),
        ),
        tool(
            "test_missing_capability",
            "Needs the client's sampling capability (-32021 without it)",
            Interactive,
            no_arguments(),
        ),
        tool(
            "test_streaming_elicitation",
            "Sends progress, then asks the user a question through an input-required result",
            Interactive,
            no_arguments(),
        ),
        tool(
            "test_trigger_tool_change",
            "Adds or removes test_dynamic_tool and notifies listeners",
            Mutating,
            no_arguments(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Adds or removes test_dynamic_prompt and notifies listeners",
            Mutating,
            no_arguments(),
        ),
        tool(
            "test_update_watched_resource",
            "Changes test://watched-resource and notifies its subscribers",
            Mutating,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_elicitation",
            "Asks for the user's name through an input-required result (SEP-2322)",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_sampling",
            "Asks the client's LLM a question through an input-required result",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_list_roots",
            "Asks for the client's roots through an input-required result",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_request_state",
            "Round-trips an integrity-protected requestState",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_multiple_inputs",
            "Asks for elicitation, sampling and roots in one input-required result",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_multi_round",
            "Asks two questions in two rounds, carrying the first answer in requestState",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_tampered_state",
            "Rejects a requestState that fails its integrity check",
            Pure,
            no_arguments(),
        ),
        tool(
            "test_input_required_result_capabilities",
            "Asks only for what the client declared it can answer",
            Pure,
            no_arguments(),
        ),
    ];
    if with_dynamic_tool {
        tools.push(tool(
            DYNAMIC_TOOL,
            "Exists only after test_trigger_tool_change",
            Pure,
            no_arguments(),
        ));
    }
    tools
}

/// Every prompt, in a stable order.
pub(super) fn prompts(with_dynamic_prompt: bool) -> Vec<Prompt> {
    let mut prompts = vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with two required arguments"),
            Some(vec![
                PromptArgument::new("arg1")
                    .with_description("First test argument")
                    .with_required(true),
                PromptArgument::new("arg2")
                    .with_description("Second test argument")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt embedding a resource"),
            Some(vec![
                PromptArgument::new("resourceUri")
                    .with_description("URI of the resource to embed")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt with an image"),
            None,
        ),
        Prompt::new(
            "test_input_required_result_prompt",
            Some("A prompt that asks the user for context first (SEP-2322)"),
            None,
        ),
    ];
    if with_dynamic_prompt {
        prompts.push(Prompt::new(
            DYNAMIC_PROMPT,
            Some("Exists only after test_trigger_prompt_change"),
            None,
        ));
    }
    prompts
}

/// The direct resources (templates are separate).
pub(super) fn resources() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT_URI, "static-text")
            .with_description("A static text resource")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY_URI, "static-binary")
            .with_description("A static binary resource (a PNG image)")
            .with_mime_type("image/png"),
        Resource::new(WATCHED_URI, "watched-resource")
            .with_description("A resource clients may subscribe to")
            .with_mime_type("text/plain"),
    ]
}

/// The resource templates.
pub(super) fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE_URI, "template-data")
            .with_description("JSON data for an id, substituted into the URI")
            .with_mime_type("application/json"),
    ]
}

/// The contents of `uri` (the watched resource at `watched_version`), or `None` when no
/// resource or template matches it.
pub(super) fn read(uri: &str, watched_version: u64) -> Option<ResourceContents> {
    match uri {
        STATIC_TEXT_URI => {
            Some(ResourceContents::text(STATIC_TEXT, uri).with_mime_type("text/plain"))
        }
        STATIC_BINARY_URI => {
            Some(ResourceContents::blob(RED_PIXEL_PNG, uri).with_mime_type("image/png"))
        }
        WATCHED_URI => Some(
            ResourceContents::text(
                format!("The watched resource, version {watched_version}."),
                uri,
            )
            .with_mime_type("text/plain"),
        ),
        _ => {
            let id = uri
                .strip_prefix(TEMPLATE_PREFIX)?
                .strip_suffix(TEMPLATE_SUFFIX)?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            let data = serde_json::json!({
                "id": id,
                "templateTest": true,
                "data": format!("Data for ID: {id}"),
            });
            Some(ResourceContents::text(data.to_string(), uri).with_mime_type("application/json"))
        }
    }
}

/// Whether `uri` names a resource of this server (for subscriptions).
pub(super) fn is_known_uri(uri: &str) -> bool {
    read(uri, 0).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_the_id_and_reject_other_shapes() {
        let Some(ResourceContents::TextResourceContents { text, .. }) =
            read("test://template/123/data", 0)
        else {
            panic!("the template did not match");
        };
        assert!(text.contains("Data for ID: 123"), "{text}");
        assert!(read("test://template//data", 0).is_none());
        assert!(read("test://template/1/2/data", 0).is_none());
        assert!(read("test://nonexistent", 0).is_none());
    }

    #[test]
    fn tool_names_are_unique_and_the_first_tool_takes_no_arguments() {
        let tools = tools(true);
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names[0], "test_simple_text");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), tools.len());
    }
}
