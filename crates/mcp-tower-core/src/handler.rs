//! [`HandlerService`]: the innermost service that calls the user's rmcp handler.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rmcp::{ErrorData, ServerHandler, model::CallToolResponse};
use tower_service::Service;

use crate::ToolCall;

/// The future of [`HandlerService`]: the handler's `call_tool` future, boxed because its
/// type cannot be named (rmcp's trait returns `impl Future`).
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<CallToolResponse, ErrorData>> + Send>>;

/// A [`Service<ToolCall>`] that calls `H::call_tool` with the call's own request context:
/// the cancellation token, the peer (for progress notifications, sampling, elicitation) and
/// the extensions (HTTP request parts) reach the handler intact.
///
/// It is always ready; it needs the context rmcp gave the call, so a [`ToolCall`] built
/// with [`ToolCall::new`] (no context) gets an internal error saying so.
pub struct HandlerService<H> {
    handler: Arc<H>,
}

impl<H> HandlerService<H> {
    /// Calls `handler`.
    pub fn new(handler: Arc<H>) -> Self {
        Self { handler }
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

impl<H> Clone for HandlerService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
        }
    }
}

impl<H> fmt::Debug for HandlerService<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerService")
            .field("handler", &std::any::type_name::<H>())
            .finish()
    }
}

impl<H: ServerHandler> Service<ToolCall> for HandlerService<H> {
    type Response = CallToolResponse;
    type Error = ErrorData;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ToolCall) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move {
            let (params, context) = call.into_parts();
            let Some(context) = context else {
                return Err(ErrorData::internal_error(
                    format!(
                        "HandlerService cannot call tool `{}`: the ToolCall has no rmcp request \
                         context (build it with ToolCall::from_request inside call_tool)",
                        params.name
                    ),
                    None,
                ));
            };
            handler.call_tool(params, context).await
        })
    }
}
