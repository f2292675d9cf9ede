//! The latest log lines, kept in memory for the console's log page: a `tracing` layer that
//! formats each event once, masks anything that looks like an identity or phone number
//! (nothing personal should be logged in the first place; this is the second line), and keeps
//! the newest [`KEEP`] lines.

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept.
pub const KEEP: usize = 2000;

/// One log line.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at: String,
    pub level: String,
    pub target: String,
    pub text: String,
}

static LINES: Mutex<VecDeque<LogLine>> = Mutex::new(VecDeque::new());

/// The layer to install in the subscriber.
pub struct LogBufferLayer;

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LogBufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::INFO {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let line = LogLine {
            at: crate::time_fmt::format(std::time::SystemTime::now()),
            level: event.metadata().level().to_string(),
            target: event.metadata().target().to_owned(),
            text: mask_numbers(&format!("{}{}", text.message, text.fields)),
        };
        let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// The kept lines, newest first, that have at least `min` severity and contain `text`.
pub fn recent(min: Level, text: &str, limit: usize) -> Vec<LogLine> {
    let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
    let text = text.to_lowercase();
    lines
        .iter()
        .rev()
        .filter(|l| {
            l.level.parse::<Level>().is_ok_and(|lv| lv <= min)
                && (text.is_empty() || l.text.to_lowercase().contains(&text))
        })
        .take(limit)
        .cloned()
        .collect()
}

/// Masks runs of 7 or more digits (with a trailing X, as resident IDs have) through
/// [`crate::domain::mask`], the one masking the appliance has.
pub fn mask_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i < chars.len() && i > start && matches!(chars[i], 'X' | 'x') {
            i += 1;
        }
        let run = i - start;
        if run >= 7 {
            out.push_str(&crate::domain::mask(
                &chars[start..i].iter().collect::<String>(),
            ));
        } else if run > 0 {
            out.extend(&chars[start..i]);
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_numbers_and_phones_are_masked() {
        assert_eq!(
            mask_numbers("id 11010519491231002X phone 13800138000 seq 42 at 2026"),
            "id 11**************2X phone 13*******00 seq 42 at 2026"
        );
        assert_eq!(
            mask_numbers("waybill SF1234567890123"),
            "waybill SF12*********23"
        );
        assert_eq!(
            mask_numbers("端口 /dev/ttyUSB0 出错"),
            "端口 /dev/ttyUSB0 出错"
        );
    }

    #[test]
    fn the_layer_keeps_masked_lines_newest_first() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(LogBufferLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(phone = "13800138000", "reader down for unit test");
            tracing::info!(line = "L1", "second line for unit test");
            tracing::debug!("not kept");
        });
        let got = recent(Level::INFO, "for unit test", 10);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].text.starts_with("second line for unit test"),
            "{got:?}"
        );
        assert_eq!(got[1].level, "WARN");
        assert!(got[1].text.contains("phone=13*******00"), "{got:?}");
        assert_eq!(recent(Level::WARN, "for unit test", 10).len(), 1);
    }
}
