//! Writes [`Figure`]s (the other layers' figures and the process figures) in the Prometheus
//! text exposition format, after the recorder's own output.
//!
//! Figures are read at scrape time and written as they are, not fed into the recorder, so a
//! figure that disappears (a pool key closed) leaves no stale series behind and counters
//! keep their fractional values (`process_cpu_seconds_total`).

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

use mcp_tower_core::{Figure, FigureKind};

use crate::names::RESERVED;

/// Appends `figures` to `out`: one `# HELP` and `# TYPE` per name, samples of one name
/// together. Figures with an invalid name or label key, a reserved name, a kind different
/// from the first figure of their name, or a label set already written are skipped (each is
/// a bug in the layer that reported it) and logged.
pub(crate) fn write_figures(out: &mut String, figures: &[Figure]) {
    let mut order: Vec<&'static str> = Vec::new();
    let mut by_name: HashMap<&'static str, Vec<&Figure>> = HashMap::new();
    for figure in figures {
        if let Err(why) = check(figure) {
            tracing::warn!(name = figure.name, why, "skipping an invalid figure");
            continue;
        }
        let group = by_name.entry(figure.name).or_insert_with(|| {
            order.push(figure.name);
            Vec::new()
        });
        if let Some(first) = group.first()
            && first.kind != figure.kind
        {
            tracing::warn!(
                name = figure.name,
                "skipping a figure reported both as a counter and as a gauge"
            );
            continue;
        }
        group.push(figure);
    }
    for name in order {
        let group = &by_name[name];
        let first = group[0];
        let kind = match first.kind {
            FigureKind::Counter => "counter",
            FigureKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let mut seen: HashSet<Vec<(&str, &str)>> = HashSet::new();
        for figure in group {
            let mut labels: Vec<(&str, &str)> = figure
                .labels
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            labels.sort_unstable();
            if !seen.insert(labels) {
                tracing::warn!(
                    name,
                    "skipping a figure whose label set was already reported"
                );
                continue;
            }
            write_sample(out, figure);
        }
        out.push('\n');
    }
}

fn check(figure: &Figure) -> Result<(), &'static str> {
    if !is_metric_name(figure.name) {
        return Err("not a valid Prometheus metric name");
    }
    if RESERVED.contains(&figure.name) {
        return Err("the name is recorded by the metrics layer itself");
    }
    let mut keys = HashSet::new();
    for (key, _) in &figure.labels {
        if !is_label_name(key) {
            return Err("a label name is not valid");
        }
        if !keys.insert(*key) {
            return Err("a label name appears twice");
        }
    }
    if figure.kind == FigureKind::Counter && figure.value < 0.0 {
        return Err("a counter is negative");
    }
    Ok(())
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_sample(out: &mut String, figure: &Figure) {
    out.push_str(figure.name);
    if !figure.labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in figure.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, figure.value);
    out.push('\n');
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The process figures (RSS, virtual memory, CPU seconds, open and max file descriptors,
/// threads, start time) under their standard Prometheus names.
#[cfg(feature = "process")]
pub(crate) fn process_figures(out: &mut Vec<Figure>) {
    let m = metrics_process::collector::collect();
    let gauge = |name, help, value: Option<u64>| value.map(|v| Figure::gauge(name, help, v as f64));
    out.extend(
        [
            // A counter with a fractional value, which `Figure::counter` (u64) cannot hold.
            m.cpu_seconds_total.map(|seconds| Figure {
                name: "process_cpu_seconds_total",
                help: "Total user and system CPU time spent in seconds.",
                kind: FigureKind::Counter,
                labels: Vec::new(),
                value: seconds,
            }),
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                m.resident_memory_bytes,
            ),
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                m.virtual_memory_bytes,
            ),
            gauge(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                m.virtual_memory_max_bytes,
            ),
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                m.open_fds,
            ),
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                m.max_fds,
            ),
            gauge(
                "process_threads",
                "Number of OS threads in the process.",
                m.threads,
            ),
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                m.start_time_seconds,
            ),
        ]
        .into_iter()
        .flatten(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name_escapes_and_skips_bad_figures() {
        let figures = vec![
            Figure::counter("mcp_cache_hits_total", "Cache hits.", 3).with_label("tool", "a"),
            Figure::gauge("mcp_cache_entries", "Entries.", 2.0),
            Figure::counter("mcp_cache_hits_total", "Cache hits.", 4)
                .with_label("tool", "we\"ird\\name\n"),
            // Same label set again: skipped.
            Figure::counter("mcp_cache_hits_total", "Cache hits.", 5).with_label("tool", "a"),
            // Kind conflict: skipped.
            Figure::counter("mcp_cache_entries", "Entries.", 1).with_label("x", "y"),
            Figure::gauge("bad name", "x", 1.0),
            Figure::gauge("mcp_ok", "x", 1.0).with_label("__reserved", "v"),
            Figure::gauge("mcp_tool_calls_total", "reserved", 1.0),
            Figure::gauge("mcp_inf", "Infinite.\nTwo lines.", f64::INFINITY),
        ];
        let mut out = String::new();
        write_figures(&mut out, &figures);
        assert_eq!(
            out,
            "# HELP mcp_cache_hits_total Cache hits.\n\
             # TYPE mcp_cache_hits_total counter\n\
             mcp_cache_hits_total{tool=\"a\"} 3\n\
             mcp_cache_hits_total{tool=\"we\\\"ird\\\\name\\n\"} 4\n\
             \n\
             # HELP mcp_cache_entries Entries.\n\
             # TYPE mcp_cache_entries gauge\n\
             mcp_cache_entries 2\n\
             \n\
             # HELP mcp_inf Infinite.\\nTwo lines.\n\
             # TYPE mcp_inf gauge\n\
             mcp_inf +Inf\n\
             \n"
        );
    }

    #[test]
    fn names_follow_the_prometheus_grammar() {
        assert!(is_metric_name("a:b_c9"));
        assert!(!is_metric_name("9a"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("_a1"));
        assert!(!is_label_name("__a"));
        assert!(!is_label_name("a:b"));
    }
}
