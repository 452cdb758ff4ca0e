//! The retry layer: [`RetryLayer`], [`Retry`], its [`RetryConfig`] and [`RetryHandle`].

mod backoff;
mod budget;
mod config;
mod future;
mod handle;
mod layer;
mod service;
mod striped;

pub use backoff::Backoff;
pub use config::{BudgetConfig, InvalidConfig, RetryConfig};
pub use future::ResponseFuture;
pub use handle::{RetryHandle, RetryStats};
pub use layer::RetryLayer;
pub use service::Retry;
