//! The demo MCP server: five realistic tools with MCP annotations, written with rmcp's
//! `#[tool_router]` exactly as a server author would, with no knowledge of mcp-tower.
//!
//! | tool | annotations | behaviour |
//! |---|---|---|
//! | `weather(city)` | read-only | simulated lookup, ~150 ms |
//! | `fx_rate(from, to)` | read-only, open-world | exchange rate from a fixed table, ~50 ms |
//! | `set_flag(name, value)` | idempotent | sets a named flag, returns the previous value |
//! | `append_note(text)` | destructive | appends a note, returns how many there are |
//! | `echo(text)` | read-only | returns its input at once (the end-to-end ceiling) |

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{
    Json, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{Implementation, ServerCapabilities, ServerConfig},
    schemars::{self, JsonSchema},
    tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};

/// Arguments of `weather`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WeatherArgs {
    /// The city, like "Oslo".
    pub city: String,
}

/// What `weather` returns.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct WeatherReport {
    /// The city asked about.
    pub city: String,
    /// Temperature in degrees Celsius.
    pub temperature_c: f64,
    /// A short description.
    pub conditions: String,
    /// Relative humidity in percent.
    pub humidity_pct: u8,
}

/// Arguments of `fx_rate`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FxArgs {
    /// ISO 4217 code of the currency to convert from, like "EUR".
    pub from: String,
    /// ISO 4217 code of the currency to convert to, like "NOK".
    pub to: String,
}

/// What `fx_rate` returns.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FxRate {
    /// From this currency…
    pub from: String,
    /// …to this one.
    pub to: String,
    /// Units of `to` for one unit of `from`.
    pub rate: f64,
}

/// Arguments of `set_flag`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FlagArgs {
    /// The flag's name.
    pub name: String,
    /// Its new value.
    pub value: bool,
}

/// What `set_flag` returns.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FlagChange {
    /// The flag's name.
    pub name: String,
    /// The value before the call (`null` if it was never set).
    pub previous: Option<bool>,
    /// The value now.
    pub value: bool,
}

/// Arguments of `append_note` and `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TextArgs {
    /// The text.
    pub text: String,
}

/// What `append_note` returns.
#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct NoteAdded {
    /// How many notes there are now.
    pub count: usize,
}

/// Exchange rates against the US dollar (units of the currency per USD).
const USD_RATES: &[(&str, f64)] = &[
    ("USD", 1.0),
    ("EUR", 0.92),
    ("GBP", 0.79),
    ("JPY", 151.3),
    ("NOK", 10.74),
    ("SEK", 10.49),
    ("CHF", 0.88),
    ("CAD", 1.36),
];

const CONDITIONS: &[&str] = &[
    "clear",
    "partly cloudy",
    "overcast",
    "light rain",
    "snow",
    "fog",
];

/// The demo server's handler.
#[derive(Debug, Clone)]
pub struct Demo {
    tool_router: ToolRouter<Self>,
    weather_latency: Duration,
    fx_latency: Duration,
    flags: Arc<Mutex<BTreeMap<String, bool>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A small stable hash, so a city always gets the same simulated weather.
fn stable_hash(s: &str) -> u64 {
    s.to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[tool_router]
impl Demo {
    /// A demo server with the default simulated latencies (150 ms weather, 50 ms fx).
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
            weather_latency: Duration::from_millis(150),
            fx_latency: Duration::from_millis(50),
            flags: Arc::default(),
            notes: Arc::default(),
        }
    }

    /// Sets the simulated latency of `weather`.
    pub fn with_weather_latency(mut self, latency: Duration) -> Self {
        self.weather_latency = latency;
        self
    }

    /// Sets the simulated latency of `fx_rate`.
    pub fn with_fx_latency(mut self, latency: Duration) -> Self {
        self.fx_latency = latency;
        self
    }

    /// Declares which demo tools are *public* in `config`, unless the configuration already
    /// says: `weather` and `echo` (their results do not depend on who asks, so every caller
    /// shares one cache entry), while `fx_rate` keeps the default *private* scope (a rate
    /// could depend on the customer): a newcomer sees shared hits and per-caller isolation
    /// side by side.
    pub fn declare_scopes(config: &mut mcp_tower::StackConfig) {
        for tool in ["weather", "echo"] {
            config
                .tools
                .entry(tool.to_owned())
                .or_default()
                .scope
                .get_or_insert(mcp_tower::CacheScope::Public);
        }
    }

    /// The notes appended so far.
    pub fn notes(&self) -> Vec<String> {
        lock(&self.notes).clone()
    }

    #[tool(
        description = "Current weather for a city (simulated; takes about 150 ms).",
        annotations(title = "Weather", read_only_hint = true, open_world_hint = false)
    )]
    async fn weather(
        &self,
        Parameters(args): Parameters<WeatherArgs>,
    ) -> Result<Json<WeatherReport>, String> {
        let city = args.city.trim();
        if city.is_empty() {
            return Err("`city` must not be empty".into());
        }
        if city.chars().count() > 100 {
            return Err("`city` is longer than 100 characters".into());
        }
        tokio::time::sleep(self.weather_latency).await;
        let h = stable_hash(city);
        Ok(Json(WeatherReport {
            city: city.to_owned(),
            temperature_c: ((h % 500) as f64) / 10.0 - 15.0,
            conditions: CONDITIONS[(h / 500 % CONDITIONS.len() as u64) as usize].to_owned(),
            humidity_pct: (h / 7 % 80 + 20) as u8,
        }))
    }

    #[tool(
        description = "Exchange rate between two currencies (ISO 4217 codes such as EUR, NOK).",
        annotations(title = "Exchange rate", read_only_hint = true, open_world_hint = true)
    )]
    async fn fx_rate(&self, Parameters(args): Parameters<FxArgs>) -> Result<Json<FxRate>, String> {
        let rate_of = |code: &str| {
            USD_RATES
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(code))
                .map(|(_, r)| *r)
                .ok_or_else(|| {
                    let known: Vec<_> = USD_RATES.iter().map(|(c, _)| *c).collect();
                    format!("unknown currency `{code}`; known: {}", known.join(", "))
                })
        };
        let from = rate_of(&args.from)?;
        let to = rate_of(&args.to)?;
        tokio::time::sleep(self.fx_latency).await;
        Ok(Json(FxRate {
            from: args.from.to_uppercase(),
            to: args.to.to_uppercase(),
            rate: (to / from * 1e6).round() / 1e6,
        }))
    }

    #[tool(
        description = "Set a named feature flag; setting it to the value it has changes nothing.",
        annotations(
            title = "Set flag",
            read_only_hint = false,
            idempotent_hint = true,
            destructive_hint = false
        )
    )]
    async fn set_flag(
        &self,
        Parameters(args): Parameters<FlagArgs>,
    ) -> Result<Json<FlagChange>, String> {
        if args.name.is_empty() {
            return Err("`name` must not be empty".into());
        }
        let previous = lock(&self.flags).insert(args.name.clone(), args.value);
        Ok(Json(FlagChange {
            name: args.name,
            previous,
            value: args.value,
        }))
    }

    #[tool(
        description = "Append a note to the shared notebook; every call adds one.",
        annotations(
            title = "Append note",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false
        )
    )]
    async fn append_note(&self, Parameters(args): Parameters<TextArgs>) -> Json<NoteAdded> {
        let mut notes = lock(&self.notes);
        notes.push(args.text);
        Json(NoteAdded { count: notes.len() })
    }

    #[tool(
        description = "Return the text unchanged, at once.",
        annotations(title = "Echo", read_only_hint = true, open_world_hint = false)
    )]
    async fn echo(&self, Parameters(args): Parameters<TextArgs>) -> String {
        args.text
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-tower-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "A demo of mcp-tower: weather and fx_rate are read-only (cached), set_flag is \
                 idempotent, append_note is destructive, echo is instant.",
            )
    }
}
