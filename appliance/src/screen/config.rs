//! The screening stage's model configuration (`[model]`), with defaults and checks. The
//! rules' section (`[rules]`) is the rules' own: `screenline_core::rules::config`.

use crate::problems::Problems;
pub use screenline_core::rules::config::RulesConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model folder (manifest.json + .onnx). Default: the newest folder in the bundled models/.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// ONNX Runtime's shared library. Default: $ORT_DYLIB_PATH, else the path the setup script installs to.
    #[serde(default)]
    pub ort_dylib_path: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one inference. Default: 1.
    #[serde(default = "one")]
    pub intra_threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dir: None,
            ort_dylib_path: None,
            intra_threads: 1,
        }
    }
}

fn one() -> usize {
    1
}

impl ModelConfig {
    /// Checks `[model]`.
    pub fn problems(&self, p: &mut Problems) {
        if self.intra_threads == 0 {
            p.push("intra_threads", " = 0: must be at least 1");
        }
    }
}
