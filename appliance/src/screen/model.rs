//! The classifier: a model folder (manifest + `.onnx`), ONNX Runtime loaded from its shared
//! library, and inference from a decoded RGB image to [`Scores`].
//!
//! `Session::run` takes `&mut self`, so a [`Model`] is owned by one screening thread and
//! never used from a tokio worker. A model whose file, inputs, outputs or labels disagree
//! with its manifest is refused with a message that says what differs.

use crate::domain::{Category, Scores};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The ONNX Runtime release the setup script installs.
pub const ORT_VERSION: &str = "1.31.1";
/// The command that installs it.
pub const ORT_SETUP: &str = "appliance/scripts/install-onnxruntime.sh";

/// Why a model could not be used.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found at {0}: run `{ORT_SETUP}` (or set ORT_DYLIB_PATH / model.ort_dylib_path)")]
    RuntimeMissing(PathBuf),
    #[error("ONNX Runtime at {path} could not be loaded ({why}): run `{ORT_SETUP}` to install {ORT_VERSION}")]
    RuntimeBroken { path: PathBuf, why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: manifest is not valid: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("model {path} does not match its manifest: {why}")]
    Mismatch { path: PathBuf, why: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Ort(e.to_string())
    }
}

/// How the model wants its input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub layout: String,
    pub colour: String,
    pub resize: String,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Output tensor names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub category: String,
    pub counterfeit: String,
}

/// Counterfeit-score thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub default: f32,
    #[serde(default)]
    pub per_category: BTreeMap<String, f32>,
}

/// A model folder's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub input: InputSpec,
    pub labels: Vec<String>,
    pub outputs: OutputSpec,
    pub thresholds: Thresholds,
}

/// Name, version and hash, as every decision and report carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// Where ONNX Runtime is looked for: the config key, then ORT_DYLIB_PATH, then the path the
/// setup script installs to.
pub fn runtime_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/share"));
    data.join("screenline/onnxruntime/libonnxruntime.so")
}

/// Loads ONNX Runtime once per process. A missing or wrong library is an error that names
/// the setup command; ort's own panic on a too-old library is caught and reported the same way.
pub fn init_runtime(
    configured: Option<&Path>,
) -> Result<ort::environment::Environment, ModelError> {
    static ENV: std::sync::OnceLock<Result<ort::environment::Environment, String>> =
        std::sync::OnceLock::new();
    let path = runtime_path(configured);
    if !path.exists() {
        return Err(ModelError::RuntimeMissing(path));
    }
    let result = ENV.get_or_init(|| {
        let p = path.clone();
        std::panic::catch_unwind(move || -> Result<_, String> {
            let builder = ort::init_from(&p).map_err(|e| e.to_string())?;
            builder
                .with_name("screenline")
                .build()
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|_| Err("the library panicked while loading (too old?)".into()))
    });
    result
        .clone()
        .map_err(|why| ModelError::RuntimeBroken { path, why })
}

/// An ONNX Runtime session as the line runs one: full graph optimisation, `intra_threads`
/// threads, spinning off (a spinning pool would eat an idle core on a 2-core appliance).
/// Public so that the inference benchmark measures bare `Session::run` on the very same
/// settings.
pub fn new_session(
    env: &ort::environment::Environment,
    intra_threads: usize,
    onnx: &[u8],
) -> Result<Session, ModelError> {
    Ok(Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort::Error::from)?
        .with_intra_threads(intra_threads)
        .map_err(ort::Error::from)?
        .with_intra_op_spinning(false)
        .map_err(ort::Error::from)?
        .commit_from_memory(onnx)?)
}

/// A loaded model, ready to screen.
pub struct Model {
    session: Session,
    manifest: Manifest,
    info: ModelInfo,
    thresholds: BTreeMap<Category, f32>,
}

impl Model {
    /// Loads and verifies the model in `dir`.
    pub fn load(
        dir: &Path,
        env: &ort::environment::Environment,
        intra_threads: usize,
    ) -> Result<Model, ModelError> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read(&manifest_path).map_err(|source| ModelError::Read {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| ModelError::Manifest {
                path: manifest_path.clone(),
                why: e.to_string(),
            })?;
        let onnx_path = dir.join(&manifest.file);
        let mismatch = |why: String| ModelError::Mismatch {
            path: onnx_path.clone(),
            why,
        };
        let bytes = std::fs::read(&onnx_path).map_err(|source| ModelError::Read {
            path: onnx_path.clone(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if sha256 != manifest.sha256 {
            return Err(mismatch(format!(
                "SHA-256 is {sha256}, the manifest says {}",
                manifest.sha256
            )));
        }
        let labels: Vec<String> = Category::ALL.iter().map(|c| c.key().to_owned()).collect();
        if manifest.labels != labels {
            return Err(mismatch(format!(
                "labels are {:?}, expected the category keys {:?}",
                manifest.labels, labels
            )));
        }
        let i = &manifest.input;
        if i.channels != 3 || i.layout != "NCHW" || i.colour != "rgb" {
            return Err(mismatch(format!(
                "input must be 3-channel rgb NCHW, the manifest says {} channels {} {}",
                i.channels, i.colour, i.layout
            )));
        }
        let mut thresholds = BTreeMap::new();
        for c in Category::ALL {
            let t = manifest
                .thresholds
                .per_category
                .get(c.key())
                .copied()
                .unwrap_or(manifest.thresholds.default);
            thresholds.insert(c, t);
        }
        let session = new_session(env, intra_threads, &bytes)?;
        let has_input = session.inputs().iter().any(|o| o.name() == i.name);
        if !has_input {
            let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
            return Err(mismatch(format!(
                "the model has inputs {names:?}, the manifest names {:?}",
                i.name
            )));
        }
        for wanted in [&manifest.outputs.category, &manifest.outputs.counterfeit] {
            if !session.outputs().iter().any(|o| o.name() == wanted) {
                let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                return Err(mismatch(format!(
                    "the model has outputs {names:?}, the manifest names {wanted:?}"
                )));
            }
        }
        let info = ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256,
        };
        let mut model = Model {
            session,
            manifest,
            info,
            thresholds,
        };
        // Warm up, and prove the graph runs with the shapes the manifest promises.
        let blank = image::RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        model
            .infer(&blank)
            .map_err(|e| mismatch(format!("a test inference failed: {e}")))?;
        Ok(model)
    }

    /// The model's identity.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The manifest the model was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The counterfeit threshold for a category.
    pub fn threshold(&self, c: Category) -> f32 {
        self.thresholds
            .get(&c)
            .copied()
            .unwrap_or(self.manifest.thresholds.default)
    }

    /// Resizes and normalises an image into the model's NCHW input.
    pub fn preprocess(&self, rgb: &image::RgbImage) -> Vec<f32> {
        let i = &self.manifest.input;
        let resized = image::imageops::resize(
            rgb,
            i.width,
            i.height,
            image::imageops::FilterType::Triangle,
        );
        let plane = (i.width * i.height) as usize;
        let mut out = vec![0f32; plane * 3];
        for (idx, px) in resized.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + idx] = (f32::from(px.0[c]) * i.scale - i.mean[c]) / i.std[c];
            }
        }
        out
    }

    /// Scores one image.
    pub fn infer(&mut self, rgb: &image::RgbImage) -> Result<Scores, ModelError> {
        let input = self.preprocess(rgb);
        let i = &self.manifest.input;
        let shape = [1usize, 3, i.height as usize, i.width as usize];
        let tensor = TensorRef::from_array_view((shape, input.as_slice()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => tensor])?;
        let (_, probs) =
            outputs[self.manifest.outputs.category.as_str()].try_extract_tensor::<f32>()?;
        let (_, cf) =
            outputs[self.manifest.outputs.counterfeit.as_str()].try_extract_tensor::<f32>()?;
        if probs.len() != Category::ALL.len() || cf.is_empty() {
            return Err(ModelError::Ort(format!(
                "outputs have {} category scores and {} counterfeit scores; expected 16 and 1",
                probs.len(),
                cf.len()
            )));
        }
        Ok(Scores {
            category: Category::ALL
                .iter()
                .copied()
                .zip(probs.iter().copied())
                .collect(),
            counterfeit: cf[0],
        })
    }
}

/// The model folder to use when none is configured: `models/` next to the working
/// directory, then the one this binary was built from, then the installed one.
pub fn default_model_dir() -> Option<PathBuf> {
    const NAME: &str = "screenline-ref-0.1";
    let candidates = [
        PathBuf::from("models").join(NAME),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(NAME),
        PathBuf::from("/usr/share/screenline/models").join(NAME),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("manifest.json").is_file())
}
