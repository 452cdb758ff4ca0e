//! Multi-round-trip requests (SEP-2322): the tools and the prompt that answer with an
//! `InputRequiredResult` and complete once the client retries with its `inputResponses`.
//!
//! Each flow is stateless on the server: what a later round needs travels in
//! `requestState`, sealed with an HMAC key ([`RequestStateCodec`]) and bound to the tool
//! it was issued for, so a client can neither forge nor transplant it.

use std::time::Duration;

use rmcp::{
    ErrorData as McpError,
    model::{
        CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock, CreateMessageRequest,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
        ElicitResult, ElicitationAction, ElicitationSchema, GetPromptResponse, GetPromptResult,
        InputRequest, InputRequests, InputRequiredResult, InputResponses, ListRootsRequest,
        ListRootsResult, PromptMessage, RequestStateCodec, Role, SamplingMessage, SealOptions,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a sealed `requestState` stays valid.
const STATE_TTL: Duration = Duration::from_secs(600);

/// What a flow carries from one round to the next.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FlowState {
    /// The round that issued this state (1 for the first input-required result).
    round: u8,
    /// An answer from an earlier round, for flows that need it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// One retry of a multi-round-trip request, as the client sent it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Round<'a> {
    /// The tool (or prompt) name; sealed states are bound to it.
    pub(super) name: &'a str,
    /// The client's answers to the previous round's input requests.
    pub(super) responses: Option<&'a InputResponses>,
    /// The `requestState` echoed back from the previous round.
    pub(super) state: Option<&'a str>,
}

/// Builds and checks the input-required results of every multi-round-trip flow.
pub(super) struct InputRequiredFlows {
    codec: RequestStateCodec,
}

impl std::fmt::Debug for InputRequiredFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputRequiredFlows").finish_non_exhaustive()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, McpError> {
    serde_json::from_value(value)
        .map_err(|e| McpError::internal_error(format!("building {what}: {e}"), None))
}

/// A form elicitation asking for one string field.
fn ask_string(message: &str, field: &str) -> Result<InputRequest, McpError> {
    ask_form(
        message,
        json!({
            "type": "object",
            "properties": { field: { "type": "string" } },
            "required": [field]
        }),
    )
}

/// A form elicitation with `schema` as its requested schema.
pub(super) fn ask_form(message: &str, schema: Value) -> Result<InputRequest, McpError> {
    let requested_schema: ElicitationSchema = from_json(schema, "an elicitation schema")?;
    Ok(InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.to_owned(),
            requested_schema,
        },
    )))
}

fn ask_llm(prompt: &str, max_tokens: u32) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(CreateMessageRequestParams::new(
        vec![SamplingMessage::user_text(prompt)],
        max_tokens,
    )))
}

fn ask_roots() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

/// The string `field` of an accepted elicitation answer, or `None` when the answer is
/// missing, malformed, or not an acceptance with that field.
fn accepted_field(responses: Option<&InputResponses>, key: &str, field: &str) -> Option<String> {
    let answer: ElicitResult = serde_json::from_value(responses?.get(key)?.clone()).ok()?;
    match answer.action {
        ElicitationAction::Accept => answer
            .content?
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Whether the elicitation answer under `key` is well formed, whatever the user chose.
fn elicitation_answered(responses: Option<&InputResponses>, key: &str) -> Option<ElicitResult> {
    serde_json::from_value(responses?.get(key)?.clone()).ok()
}

/// The text of a sampling answer (a `CreateMessageResult`), if it is one and has text.
pub(super) fn sampling_text(answer: &Value) -> Option<String> {
    let answer = CreateMessageResult::deserialize(answer).ok()?;
    answer
        .message
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
}

/// The text of the sampling answer under `key`.
fn sampled_text(responses: Option<&InputResponses>, key: &str) -> Option<String> {
    sampling_text(responses?.get(key)?)
}

/// The root URIs of the roots answer under `key`.
fn root_uris(responses: Option<&InputResponses>, key: &str) -> Option<Vec<String>> {
    let answer: ListRootsResult = serde_json::from_value(responses?.get(key)?.clone()).ok()?;
    Some(answer.roots.into_iter().map(|r| r.uri).collect())
}

fn complete(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn requests<const N: usize>(entries: [(&str, InputRequest); N]) -> InputRequests {
    entries
        .into_iter()
        .map(|(key, request)| (key.to_owned(), request))
        .collect()
}

impl InputRequiredFlows {
    /// Flows whose states are sealed with a fresh random key.
    pub(super) fn new() -> Result<Self, McpError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            McpError::internal_error(format!("drawing a requestState key: {e}"), None)
        })?;
        let codec = RequestStateCodec::try_new(key.to_vec()).map_err(|e| {
            McpError::internal_error(format!("building the requestState codec: {e}"), None)
        })?;
        Ok(Self { codec })
    }

    fn seal(&self, tool: &str, state: &FlowState) -> Result<String, McpError> {
        self.codec
            .seal_json_with(
                state,
                &SealOptions::new()
                    .associated_data(tool.as_bytes())
                    .ttl(STATE_TTL),
            )
            .map_err(|e| McpError::internal_error(format!("sealing requestState: {e}"), None))
    }

    /// Opens the echoed state: `Ok(None)` when there is none, an invalid-params error when
    /// it was forged, tampered with, issued for another tool, or has expired.
    fn open(&self, round: &Round<'_>) -> Result<Option<FlowState>, McpError> {
        let Some(sealed) = round.state else {
            return Ok(None);
        };
        self.codec
            .open_json_with(sealed, round.name.as_bytes())
            .map(Some)
            .map_err(|_| {
                McpError::invalid_params(
                    "requestState failed its integrity check; start the request again without it",
                    Some(json!({ "tool": round.name })),
                )
            })
    }

    fn input_required(
        &self,
        tool: &str,
        requests: InputRequests,
        state: Option<FlowState>,
    ) -> Result<InputRequiredResult, McpError> {
        let sealed = state.map(|s| self.seal(tool, &s)).transpose()?;
        Ok(InputRequiredResult::new(Some(requests), sealed))
    }

    /// Runs the tool `round.name`, or `None` when it is not a multi-round-trip tool.
    pub(super) fn call_tool(
        &self,
        round: Round<'_>,
        client: Option<&ClientCapabilities>,
    ) -> Option<Result<CallToolResponse, McpError>> {
        let result = match round.name {
            "test_input_required_result_elicitation" => self.elicitation(round),
            "test_input_required_result_sampling" => self.sampling(round),
            "test_input_required_result_list_roots" => self.list_roots(round),
            "test_input_required_result_request_state"
            | "test_input_required_result_tampered_state" => self.confirm(round),
            "test_input_required_result_multiple_inputs" => self.multiple_inputs(round),
            "test_input_required_result_multi_round" => self.multi_round(round),
            "test_input_required_result_capabilities" => self.capabilities(round, client),
            _ => return None,
        };
        Some(result)
    }

    /// Asks for the user's name; re-asks while no acceptable answer came back.
    fn elicitation(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        if let Some(name) = accepted_field(round.responses, "user_name", "name") {
            return Ok(complete(format!("Hello, {name}!")));
        }
        if let Some(answer) = elicitation_answered(round.responses, "user_name") {
            return Ok(complete(format!(
                "No name given (the user chose {:?}).",
                answer.action
            )));
        }
        let ask = requests([("user_name", ask_string("What is your name?", "name")?)]);
        Ok(self.input_required(round.name, ask, None)?.into())
    }

    fn sampling(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        if let Some(text) = sampled_text(round.responses, "capital_question") {
            return Ok(complete(format!("LLM response: {text}")));
        }
        let ask = requests([(
            "capital_question",
            ask_llm("What is the capital of France?", 100),
        )]);
        Ok(self.input_required(round.name, ask, None)?.into())
    }

    fn list_roots(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        if let Some(uris) = root_uris(round.responses, "client_roots") {
            return Ok(complete(format!(
                "The client has {} root(s): {}",
                uris.len(),
                uris.join(", ")
            )));
        }
        let ask = requests([("client_roots", ask_roots())]);
        Ok(self.input_required(round.name, ask, None)?.into())
    }

    /// Asks for a confirmation and carries a sealed state; the answer only counts with the
    /// state this server issued for this tool.
    fn confirm(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        let state = self.open(&round)?;
        if let (Some(_), Some(answer)) = (state, elicitation_answered(round.responses, "confirm")) {
            let ok = answer
                .content
                .as_ref()
                .and_then(|c| c.get("ok"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return Ok(complete(format!(
                "state-ok: requestState verified; action={:?}, ok={ok}",
                answer.action
            )));
        }
        let ask = requests([(
            "confirm",
            ask_form(
                "Please confirm",
                json!({
                    "type": "object",
                    "properties": { "ok": { "type": "boolean" } },
                    "required": ["ok"]
                }),
            )?,
        )]);
        let state = FlowState {
            round: 1,
            name: None,
        };
        Ok(self.input_required(round.name, ask, Some(state))?.into())
    }

    fn multiple_inputs(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        let state = self.open(&round)?;
        let answers = (
            accepted_field(round.responses, "user_name", "name"),
            sampled_text(round.responses, "greeting"),
            root_uris(round.responses, "client_roots"),
        );
        if let (Some(_), (Some(name), Some(greeting), Some(roots))) = (state, answers) {
            return Ok(complete(format!(
                "{greeting} {name} (with {} root(s))",
                roots.len()
            )));
        }
        let ask = requests([
            ("user_name", ask_string("What is your name?", "name")?),
            ("greeting", ask_llm("Generate a greeting", 50)),
            ("client_roots", ask_roots()),
        ]);
        let state = FlowState {
            round: 1,
            name: None,
        };
        Ok(self.input_required(round.name, ask, Some(state))?.into())
    }

    /// Round 1 asks for a name, round 2 (with the name sealed in the state) for a colour,
    /// round 3 completes.
    fn multi_round(&self, round: Round<'_>) -> Result<CallToolResponse, McpError> {
        match self.open(&round)? {
            Some(FlowState {
                round: 2,
                name: Some(name),
            }) => {
                if let Some(color) = accepted_field(round.responses, "step2", "color") {
                    return Ok(complete(format!("{name}'s favorite color is {color}.")));
                }
                self.ask_color(round.name, name)
            }
            Some(FlowState { round: 1, .. }) => {
                match accepted_field(round.responses, "step1", "name") {
                    Some(name) => self.ask_color(round.name, name),
                    None => self.ask_name(round.name),
                }
            }
            _ => self.ask_name(round.name),
        }
    }

    fn ask_name(&self, tool: &str) -> Result<CallToolResponse, McpError> {
        let ask = requests([("step1", ask_string("Step 1: What is your name?", "name")?)]);
        let state = FlowState {
            round: 1,
            name: None,
        };
        Ok(self.input_required(tool, ask, Some(state))?.into())
    }

    fn ask_color(&self, tool: &str, name: String) -> Result<CallToolResponse, McpError> {
        let ask = requests([(
            "step2",
            ask_string("Step 2: What is your favorite color?", "color")?,
        )]);
        let state = FlowState {
            round: 2,
            name: Some(name),
        };
        Ok(self.input_required(tool, ask, Some(state))?.into())
    }

    /// Asks only what the client declared it can answer.
    fn capabilities(
        &self,
        round: Round<'_>,
        client: Option<&ClientCapabilities>,
    ) -> Result<CallToolResponse, McpError> {
        let client = client.cloned().unwrap_or_default();
        let mut ask = InputRequests::new();
        let mut answers = Vec::new();
        if client.sampling.is_some() {
            match sampled_text(round.responses, "summary") {
                Some(text) => answers.push(format!("sampling: {text}")),
                None => {
                    ask.insert("summary".into(), ask_llm("Summarize this request", 50));
                }
            }
        }
        if client.elicitation.is_some() {
            match accepted_field(round.responses, "user_name", "name") {
                Some(name) => answers.push(format!("elicitation: {name}")),
                None => {
                    ask.insert(
                        "user_name".into(),
                        ask_string("What is your name?", "name")?,
                    );
                }
            }
        }
        if client.roots.is_some() {
            match root_uris(round.responses, "client_roots") {
                Some(uris) => answers.push(format!("roots: {}", uris.len())),
                None => {
                    ask.insert("client_roots".into(), ask_roots());
                }
            }
        }
        if ask.is_empty() {
            return Ok(complete(if answers.is_empty() {
                "The client declared no capability to ask with.".to_owned()
            } else {
                answers.join("; ")
            }));
        }
        Ok(self.input_required(round.name, ask, None)?.into())
    }

    /// `prompts/get` for `test_input_required_result_prompt`: asks for the context the
    /// prompt should use, then returns it.
    pub(super) fn prompt(&self, round: Round<'_>) -> Result<GetPromptResponse, McpError> {
        if let Some(context) = accepted_field(round.responses, "user_context", "context") {
            return Ok(GetPromptResult::new(vec![PromptMessage::new_text(
                Role::User,
                format!("Answer using this context: {context}"),
            )])
            .with_description("A prompt built from the user's context")
            .into());
        }
        let ask = requests([(
            "user_context",
            ask_string("What context should the prompt use?", "context")?,
        )]);
        Ok(self.input_required(round.name, ask, None)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows() -> InputRequiredFlows {
        InputRequiredFlows::new().expect("a codec")
    }

    fn round<'a>(
        name: &'a str,
        responses: Option<&'a InputResponses>,
        state: Option<&'a str>,
    ) -> Round<'a> {
        Round {
            name,
            responses,
            state,
        }
    }

    fn input_required(response: CallToolResponse) -> InputRequiredResult {
        match response {
            CallToolResponse::InputRequired(r) => r,
            other => panic!("expected input required, got {other:?}"),
        }
    }

    fn text(response: CallToolResponse) -> String {
        match response {
            CallToolResponse::Complete(r) => {
                r.content[0].as_text().expect("text content").text.clone()
            }
            other => panic!("expected a complete result, got {other:?}"),
        }
    }

    fn accept(content: Value) -> Value {
        json!({ "action": "accept", "content": content })
    }

    #[test]
    fn a_sealed_state_opens_only_for_its_tool_and_untouched() {
        let flows = flows();
        let tool = "test_input_required_result_tampered_state";
        let first = input_required(flows.confirm(round(tool, None, None)).expect("round 1"));
        let state = first.request_state.expect("a state");
        let responses = InputResponses::from([("confirm".into(), accept(json!({ "ok": true })))]);

        let done = flows
            .confirm(round(tool, Some(&responses), Some(&state)))
            .expect("round 2");
        assert!(text(done).contains("state-ok"));

        let tampered = format!("{state}-TAMPERED");
        let err = flows
            .confirm(round(tool, Some(&responses), Some(&tampered)))
            .expect_err("a tampered state");
        assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS);

        let other_tool = "test_input_required_result_request_state";
        flows
            .confirm(round(other_tool, Some(&responses), Some(&state)))
            .expect_err("a state issued for another tool");
    }

    #[test]
    fn wrong_or_malformed_answers_ask_again() {
        let flows = flows();
        let tool = "test_input_required_result_elicitation";
        for responses in [
            InputResponses::from([("wrong_key".into(), accept(json!({ "data": "x" })))]),
            InputResponses::from([("user_name".into(), json!(12345))]),
        ] {
            let again = flows
                .elicitation(round(tool, Some(&responses), None))
                .expect("a re-request");
            let again = input_required(again);
            assert!(
                again
                    .input_requests
                    .expect("requests")
                    .contains_key("user_name")
            );
        }
        let responses = InputResponses::from([
            ("user_name".into(), accept(json!({ "name": "Alice" }))),
            ("extra".into(), accept(json!({ "foo": "bar" }))),
        ]);
        let done = flows
            .elicitation(round(tool, Some(&responses), None))
            .expect("complete");
        assert_eq!(text(done), "Hello, Alice!");
    }

    #[test]
    fn multi_round_carries_the_first_answer_in_a_new_state() {
        let flows = flows();
        let tool = "test_input_required_result_multi_round";
        let r1 = input_required(flows.multi_round(round(tool, None, None)).expect("r1"));
        let s1 = r1.request_state.expect("state 1");
        let answers1 = InputResponses::from([("step1".into(), accept(json!({ "name": "Alice" })))]);
        let r2 = input_required(
            flows
                .multi_round(round(tool, Some(&answers1), Some(&s1)))
                .expect("r2"),
        );
        let s2 = r2.request_state.expect("state 2");
        assert_ne!(s1, s2);
        assert!(r2.input_requests.expect("requests").contains_key("step2"));
        let answers2 = InputResponses::from([("step2".into(), accept(json!({ "color": "blue" })))]);
        let done = flows
            .multi_round(round(tool, Some(&answers2), Some(&s2)))
            .expect("r3");
        assert_eq!(text(done), "Alice's favorite color is blue.");
    }

    #[test]
    fn only_declared_capabilities_are_asked_for() {
        let flows = flows();
        let tool = "test_input_required_result_capabilities";
        let sampling_only = ClientCapabilities::builder().enable_sampling().build();
        let asked = input_required(
            flows
                .capabilities(round(tool, None, None), Some(&sampling_only))
                .expect("asks"),
        );
        let keys: Vec<_> = asked
            .input_requests
            .expect("requests")
            .into_keys()
            .collect();
        assert_eq!(keys, ["summary"]);
    }
}
