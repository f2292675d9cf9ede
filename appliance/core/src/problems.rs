//! What is wrong with a configuration, key by key. Each component checks its own section
//! (`line::config`, `report::config`, …) into [`Problems`]; `config` assembles the file and
//! says on which line of it each problem stands.

use std::fmt;

/// One problem: the key it is about (a path such as `lines[0].join_window_ms`) and a
/// sentence that names the key, the value and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key's full path in the file, by which `config` finds the problem's line.
    pub key: String,
    /// The whole sentence, starting with the key's path.
    pub text: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The problems found so far, each under the key path of the section being checked.
#[derive(Debug, Default)]
pub struct Problems {
    prefix: String,
    found: Vec<Problem>,
}

impl Problems {
    /// Problems of the section `prefix` (empty: the file's top level).
    pub fn new(prefix: &str) -> Problems {
        Problems {
            prefix: prefix.to_owned(),
            found: Vec::new(),
        }
    }

    /// The full path of `key` in this section.
    pub fn key(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        }
    }

    /// `key`: `text` — the sentence starts with the key's full path.
    pub fn push(&mut self, key: &str, text: impl fmt::Display) {
        let key = self.key(key);
        self.found.push(Problem {
            text: format!("{key}{text}"),
            key,
        });
    }

    /// `key = value: must be LOW to HIGH` (and `why`, if any) unless `value` is in `range`.
    pub fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        why: &str,
    ) {
        if !range.contains(&value) {
            let (low, high) = range.into_inner();
            self.push(
                key,
                format_args!(" = {value}: must be {low} to {high}{why}"),
            );
        }
    }

    /// Takes in the problems of a subsection.
    pub fn extend(&mut self, other: Problems) {
        self.found.extend(other.found);
    }

    /// What was found, in order.
    pub fn into_vec(self) -> Vec<Problem> {
        self.found
    }
}

/// An id that becomes an MQTT topic level or a file name: letters, digits, `-` and `_`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_full_paths() {
        let mut p = Problems::new("lines[1]");
        p.push("join_window_ms", " = 5: must be 100 to 10000");
        p.push("", ": two things disagree");
        let v = p.into_vec();
        assert_eq!(v[0].key, "lines[1].join_window_ms");
        assert_eq!(
            v[0].text,
            "lines[1].join_window_ms = 5: must be 100 to 10000"
        );
        assert_eq!(v[1].to_string(), "lines[1]: two things disagree");
    }
}
