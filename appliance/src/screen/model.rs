//! The model: a model folder (manifest + `.onnx` files), ONNX Runtime loaded from its shared
//! library, and inference from a decoded scan to [`Scores`].
//!
//! Two manifest schemas exist. `screenline.model.v1` (screenline-ref 0.1) is a classifier of
//! one pseudo-colour image: category probabilities and a counterfeit score; a dual-energy
//! pair is rendered to pseudo-colour for it. `screenline.model.v2` (0.2 and later) adds an
//! item detector — boxes with a category, a score and a counterfeit score each, decoded by
//! [`screenline_core::detect`] with the manifest's parameters — and has one ONNX file per
//! input kind: the dual-energy channels of a pair, or the channels of a pseudo-colour image
//! (see [`super::channels`]). The schema tells the line which outputs exist.
//!
//! `Session::run` takes `&mut self`, so a [`Model`] is owned by one screening thread and
//! never used from a tokio worker. A model whose file, inputs, outputs or labels disagree
//! with its manifest is refused with a message that says what differs.

use super::channels::{pair_channels, rgb_channels, AreaResize, CHANNELS};
use crate::domain::{Category, Scores};
pub use crate::line::image::{Decoded, Energy};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use screenline_core::detect::{self, DecodeParams, HeadMaps};
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
    #[error("{0}")]
    NoVariant(String),
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Ort(e.to_string())
    }
}

/// How a schema-1 model wants its input (screenline-ref 0.1: one pseudo-colour image).
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

/// A schema-1 model's output tensor names.
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

/// A schema-1 `manifest.json` (`screenline.model.v1`): one classifier of pseudo-colour
/// images, normalised by the manifest's mean and std.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestV1 {
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

/// What a model variant is fed: the channels of [`super::channels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A dual-energy pair: attenuation high, low, and their difference.
    Pair,
    /// A pseudo-colour image: R, G, B in 0..1.
    Rgb,
}

/// A schema-2 variant's input tensor: `[N, 3, height, width]` float32, resized by area
/// average, normalised inside the graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub layout: String,
    pub resize: String,
}

/// One ONNX file of a schema-2 model, for one kind of input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub kind: InputKind,
    pub file: String,
    pub sha256: String,
    pub input: VariantInput,
}

/// A schema-2 model's output tensor names (every variant has all of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorOutputs {
    pub category: String,
    pub counterfeit: String,
    pub heatmap: String,
    pub size: String,
    pub offset: String,
    pub item_counterfeit: String,
}

/// A schema-2 `manifest.json` (`screenline.model.v2`): a classifier and item detector, one
/// ONNX file per input kind (a dual-energy pair, a pseudo-colour image), the detector's
/// decoding parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestV2 {
    pub schema: String,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub variants: Vec<VariantSpec>,
    pub outputs: DetectorOutputs,
    pub detection: DecodeParams,
    pub thresholds: Thresholds,
}

/// The schema names a manifest may carry.
pub const SCHEMA_V1: &str = "screenline.model.v1";
pub const SCHEMA_V2: &str = "screenline.model.v2";

/// A model folder's `manifest.json`, of either schema; the schema says which outputs exist.
#[derive(Debug, Clone)]
pub enum Manifest {
    V1(ManifestV1),
    V2(ManifestV2),
}

/// `$e` on the manifest of either schema, as `$m` (a field both schemas have).
macro_rules! both {
    ($manifest:expr, $m:ident => $e:expr) => {
        match $manifest {
            Manifest::V1($m) => $e,
            Manifest::V2($m) => $e,
        }
    };
}

impl Manifest {
    /// Parses a manifest's text, by its `schema`.
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Schema {
            schema: String,
        }
        let Schema { schema } = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        match schema.as_str() {
            SCHEMA_V1 => serde_json::from_slice(text)
                .map(Manifest::V1)
                .map_err(|e| e.to_string()),
            SCHEMA_V2 => serde_json::from_slice(text)
                .map(Manifest::V2)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "schema {other:?} is not one this appliance knows ({SCHEMA_V1}, {SCHEMA_V2})"
            )),
        }
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ModelError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read(&path).map_err(|source| ModelError::Read {
            path: path.clone(),
            source,
        })?;
        Manifest::parse(&text).map_err(|why| ModelError::Manifest { path, why })
    }

    pub fn name(&self) -> &str {
        both!(self, m => &m.name)
    }

    pub fn version(&self) -> &str {
        both!(self, m => &m.version)
    }

    /// The category keys, in the order of the category output.
    pub fn labels(&self) -> &[String] {
        both!(self, m => &m.labels)
    }

    pub fn thresholds(&self) -> &Thresholds {
        both!(self, m => &m.thresholds)
    }

    /// The input kinds the model has a variant for.
    pub fn kinds(&self) -> Vec<InputKind> {
        match self {
            Manifest::V1(_) => vec![InputKind::Rgb],
            Manifest::V2(m) => m.variants.iter().map(|v| v.kind).collect(),
        }
    }

    /// The ONNX files, with the SHA-256 the manifest pins for each.
    pub fn files(&self) -> Vec<(&str, &str)> {
        match self {
            Manifest::V1(m) => vec![(m.file.as_str(), m.sha256.as_str())],
            Manifest::V2(m) => m
                .variants
                .iter()
                .map(|v| (v.file.as_str(), v.sha256.as_str()))
                .collect(),
        }
    }
}

pub use crate::domain::ModelInfo;

/// Where the Debian package installs ONNX Runtime (the library of its own version).
pub const PACKAGED_RUNTIME_DIR: &str = "/usr/lib/screenline";

/// Where ONNX Runtime is looked for: the config key, then ORT_DYLIB_PATH, then the path the
/// setup script installs to, then the library the Debian package installs
/// (`/usr/lib/screenline/libonnxruntime.so.<ORT_VERSION>`), so that a packaged appliance
/// needs no setting. With none of them present, the setup script's path (for the error).
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
    let installed = data.join("screenline/onnxruntime/libonnxruntime.so");
    let packaged = Path::new(PACKAGED_RUNTIME_DIR).join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if !installed.exists() && packaged.exists() {
        return packaged;
    }
    installed
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

/// Everything in which the graph's inputs and outputs disagree with what the manifest
/// implies, each as one sentence naming the manifest's value and the graph's; empty when
/// they agree.
///
/// The line feeds `[N, channels, height, width]` float32 and reads each output as
/// `[N, dims…]`, with N the batch (dynamic, for batched inference). A dimension the graph
/// leaves symbolic (-1) is taken as agreeing, except that the batch axis must be one.
pub fn graph_differences(
    session: &Session,
    input: &Expected<'_>,
    outputs: &[Expected<'_>],
) -> Vec<String> {
    use ort::value::{Outlet, TensorElementType};
    let mut out = Vec::new();
    let describe = |o: &Outlet| -> String {
        match (o.dtype().tensor_type(), o.dtype().tensor_shape()) {
            (Some(t), Some(s)) => format!("{} {:?} {t:?}", o.name(), &s[..]),
            _ => format!("{} (not a tensor)", o.name()),
        }
    };
    let list = |all: &[Outlet]| all.iter().map(describe).collect::<Vec<_>>().join(", ");
    // Checks one tensor against [dynamic batch, dims...].
    let check = |out: &mut Vec<String>, o: &Outlet, e: &Expected<'_>| {
        let role = e.role;
        let (Some(ty), Some(shape)) = (o.dtype().tensor_type(), o.dtype().tensor_shape()) else {
            out.push(format!("{role} {:?} is not a tensor", o.name()));
            return;
        };
        if ty != TensorElementType::Float32 {
            out.push(format!(
                "{role} {:?} is {ty:?}, the line uses float32",
                o.name()
            ));
        }
        if shape.len() != e.dims.len() + 1 {
            out.push(format!(
                "{role} {:?} has shape {:?} (rank {}), the manifest implies rank {} [N, {}]",
                o.name(),
                &shape[..],
                shape.len(),
                e.dims.len() + 1,
                e.dims
                    .iter()
                    .map(|(w, v)| format!("{w} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return;
        }
        if shape[0] != -1 {
            out.push(format!(
                "{role} {:?} has a fixed batch of {}, the line needs a dynamic batch axis",
                o.name(),
                shape[0]
            ));
        }
        for ((what, want), got) in e.dims.iter().zip(&shape[1..]) {
            if *got != -1 && got != want {
                out.push(format!(
                    "{role} {:?}: the manifest says {what} {want}, the graph has {got}",
                    o.name()
                ));
            }
        }
    };
    match session.inputs().iter().find(|o| o.name() == input.name) {
        None => out.push(format!(
            "the manifest's input {:?} is not in the graph, which has inputs [{}]",
            input.name,
            list(session.inputs())
        )),
        Some(o) => check(&mut out, o, input),
    }
    for extra in session.inputs().iter().filter(|o| o.name() != input.name) {
        out.push(format!(
            "the graph has an input {} the manifest does not name (the line feeds only {:?})",
            describe(extra),
            input.name
        ));
    }
    for e in outputs {
        match session.outputs().iter().find(|o| o.name() == e.name) {
            None => out.push(format!(
                "the manifest's {} {:?} is not in the graph, which has outputs [{}]",
                e.role,
                e.name,
                list(session.outputs())
            )),
            Some(o) => check(&mut out, o, e),
        }
    }
    out
}

/// A tensor the line feeds or reads: its name, what it is (for messages), and its
/// dimensions after the batch axis (what each is, and its size).
pub struct Expected<'a> {
    pub name: &'a str,
    pub role: &'static str,
    pub dims: Vec<(&'static str, i64)>,
}

/// The tensors one variant of `manifest` must have: its input, then its outputs.
fn expected(manifest: &Manifest, variant: usize) -> (Expected<'_>, Vec<Expected<'_>>) {
    let labels = manifest.labels().len() as i64;
    let image = |name, width: u32, height: u32, channels: u32| Expected {
        name,
        role: "input",
        dims: vec![
            ("channels", i64::from(channels)),
            ("height", i64::from(height)),
            ("width", i64::from(width)),
        ],
    };
    let parcel = |category, counterfeit| {
        vec![
            Expected {
                name: category,
                role: "category output",
                dims: vec![("labels", labels)],
            },
            Expected {
                name: counterfeit,
                role: "counterfeit output",
                dims: vec![("width", 1)],
            },
        ]
    };
    match manifest {
        Manifest::V1(m) => (
            image(
                &m.input.name,
                m.input.width,
                m.input.height,
                m.input.channels,
            ),
            parcel(&m.outputs.category, &m.outputs.counterfeit),
        ),
        Manifest::V2(m) => {
            let v = &m.variants[variant];
            let i = &v.input;
            let stride = i64::from(m.detection.stride.max(1));
            let grid = |name, role, channels| Expected {
                name,
                role,
                dims: vec![
                    ("channels", channels),
                    ("height", i64::from(i.height) / stride),
                    ("width", i64::from(i.width) / stride),
                ],
            };
            let mut outputs = parcel(&m.outputs.category, &m.outputs.counterfeit);
            outputs.extend([
                grid(&m.outputs.heatmap, "heatmap output", labels),
                grid(&m.outputs.size, "size output", 2),
                grid(&m.outputs.offset, "offset output", 2),
                grid(&m.outputs.item_counterfeit, "item counterfeit output", 1),
            ]);
            (image(&i.name, i.width, i.height, i.channels), outputs)
        }
    }
}

/// How one variant's input is made.
enum Prep {
    /// Schema 1: antialiased bilinear resize of the pseudo-colour image, normalised.
    Normalised(Box<Preprocessor>),
    /// Schema 2: the channels of [`super::channels`], area-resized (the graph normalises).
    Area(Option<AreaResize>),
}

/// One ONNX file and how to feed it.
struct Variant {
    kind: InputKind,
    session: Session,
    input: String,
    width: usize,
    height: usize,
    prep: Prep,
    /// category, counterfeit, then (schema 2) heatmap, size, offset, item counterfeit.
    outputs: Vec<String>,
}

/// A loaded model, ready to screen.
pub struct Model {
    variants: Vec<Variant>,
    manifest: Manifest,
    info: ModelInfo,
    thresholds: BTreeMap<Category, f32>,
    /// The detector's decoding (schema 2).
    detection: Option<DecodeParams>,
    /// The input tensor's buffer, reused between parcels.
    input: Vec<f32>,
}

impl Model {
    /// Loads and verifies the model in `dir`: every file's SHA-256, the labels, each graph
    /// against the manifest, and a test inference of each variant.
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
        let manifest = Manifest::parse(&text).map_err(|why| ModelError::Manifest {
            path: manifest_path.clone(),
            why,
        })?;
        let mismatch = |path: &Path, why: String| ModelError::Mismatch {
            path: path.to_owned(),
            why,
        };
        let labels: Vec<String> = Category::ALL.iter().map(|c| c.key().to_owned()).collect();
        if manifest.labels() != labels {
            return Err(mismatch(
                &manifest_path,
                format!(
                    "labels are {:?}, expected the category keys {:?}",
                    manifest.labels(),
                    labels
                ),
            ));
        }
        let detection = match &manifest {
            Manifest::V1(_) => None,
            Manifest::V2(m) => {
                m.detection
                    .validate()
                    .map_err(|e| mismatch(&manifest_path, format!("detection parameters: {e}")))?;
                if m.variants.is_empty() {
                    return Err(mismatch(&manifest_path, "no variants".into()));
                }
                Some(m.detection.clone())
            }
        };
        let mut thresholds = BTreeMap::new();
        for c in Category::ALL {
            let t = manifest.thresholds();
            let value = t.per_category.get(c.key()).copied().unwrap_or(t.default);
            thresholds.insert(c, value);
        }
        let mut variants = Vec::new();
        let mut first_sha = String::new();
        for (k, ((file, pinned), kind)) in manifest
            .files()
            .into_iter()
            .zip(manifest.kinds())
            .enumerate()
        {
            let onnx_path = dir.join(file);
            let bytes = std::fs::read(&onnx_path).map_err(|source| ModelError::Read {
                path: onnx_path.clone(),
                source,
            })?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            if sha256 != pinned {
                return Err(mismatch(
                    &onnx_path,
                    format!("SHA-256 is {sha256}, the manifest says {pinned}"),
                ));
            }
            if k == 0 {
                first_sha = sha256;
            }
            let session = new_session(env, intra_threads, &bytes)?;
            let (input, outputs) = expected(&manifest, k);
            let differences = graph_differences(&session, &input, &outputs);
            if !differences.is_empty() {
                return Err(mismatch(&onnx_path, differences.join("; ")));
            }
            let (width, height, prep) = match &manifest {
                Manifest::V1(m) => {
                    let i = &m.input;
                    if i.channels != 3 || i.layout != "NCHW" || i.colour != "rgb" {
                        return Err(mismatch(
                            &onnx_path,
                            format!(
                            "input must be 3-channel rgb NCHW, the manifest says {} channels {} {}",
                            i.channels, i.colour, i.layout
                        ),
                        ));
                    }
                    let prep = Preprocessor::new(i)
                        .map_err(|why| mismatch(&onnx_path, format!("manifest input: {why}")))?;
                    (i.width, i.height, Prep::Normalised(Box::new(prep)))
                }
                Manifest::V2(m) => {
                    let i = &m.variants[k].input;
                    if i.channels != CHANNELS as u32 || i.layout != "NCHW" || i.resize != "area" {
                        return Err(mismatch(&onnx_path, format!(
                            "input must be 3-channel NCHW resized by \"area\", the manifest says {} channels {} {:?}",
                            i.channels, i.layout, i.resize
                        )));
                    }
                    if !(1..=4096).contains(&i.width) || !(1..=4096).contains(&i.height) {
                        return Err(mismatch(
                            &onnx_path,
                            format!(
                                "input size {}x{} is out of range (1..=4096)",
                                i.width, i.height
                            ),
                        ));
                    }
                    (i.width, i.height, Prep::Area(None))
                }
            };
            variants.push(Variant {
                kind,
                session,
                input: input.name.to_owned(),
                width: width as usize,
                height: height as usize,
                prep,
                outputs: outputs.iter().map(|o| o.name.to_owned()).collect(),
            });
        }
        let info = ModelInfo {
            name: manifest.name().to_owned(),
            version: manifest.version().to_owned(),
            // Schema 2 has a file per variant: the manifest, which pins each, is the identity.
            sha256: match &manifest {
                Manifest::V1(_) => first_sha,
                Manifest::V2(_) => hex::encode(Sha256::digest(&text)),
            },
        };
        let mut model = Model {
            variants,
            manifest,
            info,
            thresholds,
            detection,
            input: Vec::new(),
        };
        // Warm up, and prove every graph runs with the shapes the manifest promises.
        for kind in model.manifest.kinds() {
            let blank = match kind {
                InputKind::Rgb => Decoded::Rgb(image::RgbImage::from_pixel(
                    64,
                    64,
                    image::Rgb([255, 255, 255]),
                )),
                InputKind::Pair => Decoded::Pair {
                    high: Energy::from_pixel(64, 64, image::Luma([u16::MAX])),
                    low: Energy::from_pixel(64, 64, image::Luma([u16::MAX])),
                },
            };
            model
                .infer(&blank)
                .map_err(|e| mismatch(&manifest_path, format!("a test inference failed: {e}")))?;
        }
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

    /// Whether the model finds items (schema 2) besides scoring the parcel.
    pub fn detects(&self) -> bool {
        self.detection.is_some()
    }

    /// The counterfeit threshold for a category.
    pub fn threshold(&self, c: Category) -> f32 {
        self.thresholds
            .get(&c)
            .copied()
            .unwrap_or(self.manifest.thresholds().default)
    }

    /// The variant that screens `scan`: a pair goes to the pair variant, else (rendered to
    /// pseudo-colour) to the pseudo-colour one; a pseudo-colour image to the latter only.
    fn variant_for(&self, scan: &Decoded) -> Result<usize, ModelError> {
        let find = |kind| self.variants.iter().position(|v| v.kind == kind);
        match scan {
            Decoded::Pair { .. } => find(InputKind::Pair).or_else(|| find(InputKind::Rgb)),
            Decoded::Rgb(_) => find(InputKind::Rgb),
        }
        .ok_or_else(|| {
            ModelError::NoVariant(format!(
                "model {} {} screens dual-energy pairs only, and this scan is one pseudo-colour image",
                self.info.name, self.info.version
            ))
        })
    }

    /// The model input of `scan` for its variant, in a fresh tensor (for tools and
    /// benches; [`Model::infer`] reuses its own buffer).
    pub fn preprocess(&mut self, scan: &Decoded) -> Result<Vec<f32>, ModelError> {
        let v = self.variant_for(scan)?;
        let variant = &mut self.variants[v];
        let mut out = vec![0f32; CHANNELS * variant.width * variant.height];
        prepare(variant, scan, &mut out)?;
        Ok(out)
    }

    /// Scores one scan.
    pub fn infer(&mut self, scan: &Decoded) -> Result<Scores, ModelError> {
        let mut scores = self.infer_batch(&[scan])?;
        scores
            .pop()
            .ok_or_else(|| ModelError::Ort("the model returned no scores".into()))
    }

    /// Scores several scans, one `Session::run` per variant they need (the graphs' batch
    /// axis is dynamic); the scores come back in the scans' order.
    pub fn infer_batch(&mut self, scans: &[&Decoded]) -> Result<Vec<Scores>, ModelError> {
        let mut which = Vec::with_capacity(scans.len());
        for scan in scans {
            which.push(self.variant_for(scan)?);
        }
        let mut out: Vec<Option<Scores>> = vec![None; scans.len()];
        for v in 0..self.variants.len() {
            let mine: Vec<usize> = (0..scans.len()).filter(|&i| which[i] == v).collect();
            if mine.is_empty() {
                continue;
            }
            let group: Vec<&Decoded> = mine.iter().map(|&i| scans[i]).collect();
            for (i, s) in mine.into_iter().zip(self.run(v, &group)?) {
                out[i] = Some(s);
            }
        }
        out.into_iter()
            .map(|s| s.ok_or_else(|| ModelError::Ort("a scan got no scores".into())))
            .collect()
    }

    /// Runs variant `v` on `scans` (all of its kind).
    fn run(&mut self, v: usize, scans: &[&Decoded]) -> Result<Vec<Scores>, ModelError> {
        let variant = &mut self.variants[v];
        let one = CHANNELS * variant.width * variant.height;
        // One buffer for the model's input, kept between calls: no allocation per parcel.
        self.input.resize(one * scans.len(), 0.0);
        for (scan, out) in scans.iter().zip(self.input.chunks_exact_mut(one)) {
            prepare(variant, scan, out)?;
        }
        let shape = [scans.len(), CHANNELS, variant.height, variant.width];
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice()))?;
        let outputs = variant
            .session
            .run(ort::inputs![variant.input.as_str() => tensor])?;
        let tensor = |k: usize| outputs[variant.outputs[k].as_str()].try_extract_tensor::<f32>();
        let (_, probs) = tensor(0)?;
        let (_, cf) = tensor(1)?;
        let k = Category::ALL.len();
        if probs.len() != k * scans.len() || cf.len() != scans.len() {
            return Err(ModelError::Ort(format!(
                "outputs have {} category scores and {} counterfeit scores for {} images; expected {} and {}",
                probs.len(),
                cf.len(),
                scans.len(),
                k * scans.len(),
                scans.len()
            )));
        }
        let mut detections = vec![Vec::new(); scans.len()];
        if let Some(params) = &self.detection {
            let (shape, heat) = tensor(2)?;
            let (_, size) = tensor(3)?;
            let (_, offset) = tensor(4)?;
            let (_, item) = tensor(5)?;
            let dim = |i: usize| shape.get(i).map_or(0, |d| usize::try_from(*d).unwrap_or(0));
            let (h, w) = (dim(2), dim(3));
            let plane = h * w;
            // Image i's part of an output with c channels.
            fn part(m: &[f32], c: usize, i: usize, plane: usize) -> Option<&[f32]> {
                m.get(i * c * plane..(i + 1) * c * plane)
            }
            for (i, scan) in scans.iter().enumerate() {
                let (Some(heatmap), Some(size), Some(offset), Some(counterfeit)) = (
                    part(heat, k, i, plane),
                    part(size, 2, i, plane),
                    part(offset, 2, i, plane),
                    part(item, 1, i, plane),
                ) else {
                    return Err(ModelError::Ort(format!(
                        "detector outputs too short for {} images of {h}x{w} cells",
                        scans.len()
                    )));
                };
                let maps = HeadMaps {
                    heatmap,
                    size,
                    offset,
                    counterfeit,
                    categories: k,
                    height: h,
                    width: w,
                };
                let (sw, sh) = scan.dimensions();
                let (sx, sy) = (
                    sw as f32 / variant.width as f32,
                    sh as f32 / variant.height as f32,
                );
                let found = detect::decode(&maps, params, sx, sy)
                    .map_err(|e| ModelError::Ort(format!("detector outputs: {e}")))?;
                detections[i] = found
                    .into_iter()
                    .filter_map(|mut d| {
                        d.bbox.x1 = d.bbox.x1.min(sw as f32);
                        d.bbox.y1 = d.bbox.y1.min(sh as f32);
                        d.bbox.is_valid().then_some(d)
                    })
                    .collect();
            }
        }
        Ok(probs
            .chunks_exact(k)
            .zip(cf.iter())
            .zip(detections)
            .map(|((p, c), detections)| Scores {
                category: Category::ALL
                    .iter()
                    .copied()
                    .zip(p.iter().copied())
                    .collect(),
                counterfeit: *c,
                detections,
            })
            .collect())
    }
}

/// Writes `scan`'s input for `variant` into `out`.
fn prepare(variant: &mut Variant, scan: &Decoded, out: &mut [f32]) -> Result<(), ModelError> {
    let size = (variant.width, variant.height);
    let channels = |e: super::channels::ChannelsError| ModelError::Ort(format!("input: {e}"));
    match (&mut variant.prep, scan) {
        (Prep::Normalised(p), scan) => p.run(&scan.pseudo_colour(), out),
        (Prep::Area(r), Decoded::Pair { high, low }) if variant.kind == InputKind::Pair => {
            pair_channels(high, low, r, size, out).map_err(channels)
        }
        (Prep::Area(r), scan) => {
            rgb_channels(&scan.pseudo_colour(), r, size, out).map_err(channels)
        }
    }
}

/// Resizing and normalisation into the model's input, with its buffers kept between images.
///
/// The resize is an antialiased bilinear convolution (fast_image_resize, SIMD), the kind of
/// filter PIL's `resize(…, BILINEAR)` is in training: the model card shows that a plain
/// 4-tap bilinear sample costs 40 points of accuracy. Normalisation is a lookup table per
/// channel, `(v · scale − mean) / std` computed once for each of the 256 byte values.
pub struct Preprocessor {
    width: u32,
    height: u32,
    resizer: fast_image_resize::Resizer,
    options: fast_image_resize::ResizeOptions,
    resized: fast_image_resize::images::Image<'static>,
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    /// A preprocessor for a manifest's input; only the `bilinear` resize is known.
    pub fn new(spec: &InputSpec) -> Result<Preprocessor, String> {
        if spec.resize != "bilinear" {
            return Err(format!(
                "input.resize is {:?}; this appliance knows only \"bilinear\" (antialiased, as PIL)",
                spec.resize
            ));
        }
        if spec.width == 0 || spec.height == 0 || spec.width > 4096 || spec.height > 4096 {
            return Err(format!(
                "input size {}x{} is out of range (1..=4096)",
                spec.width, spec.height
            ));
        }
        if spec.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(format!(
                "input.std {:?} must be finite and non-zero",
                spec.std
            ));
        }
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Ok(Preprocessor {
            width: spec.width,
            height: spec.height,
            resizer: fast_image_resize::Resizer::new(),
            options: fast_image_resize::ResizeOptions::new().resize_alg(
                fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear),
            ),
            resized: fast_image_resize::images::Image::new(
                spec.width,
                spec.height,
                fast_image_resize::PixelType::U8x3,
            ),
            lut,
        })
    }

    /// Floats in one image's tensor (3 × height × width).
    pub fn len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// Never true: a manifest's input has at least one pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resizes `rgb` and writes it, normalised, as CHW into `out` (exactly [`Self::len`] floats).
    pub fn run(&mut self, rgb: &image::RgbImage, out: &mut [f32]) -> Result<(), ModelError> {
        let src = fast_image_resize::images::ImageRef::new(
            rgb.width(),
            rgb.height(),
            rgb.as_raw(),
            fast_image_resize::PixelType::U8x3,
        )
        .map_err(|e| ModelError::Ort(format!("resize: {e}")))?;
        self.resizer
            .resize(&src, &mut self.resized, &self.options)
            .map_err(|e| ModelError::Ort(format!("resize: {e}")))?;
        let plane = self.width as usize * self.height as usize;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let [lr, lg, lb] = &self.lut;
        for ((px, (r, g)), b) in self
            .resized
            .buffer()
            .chunks_exact(3)
            .zip(r.iter_mut().zip(g.iter_mut()))
            .zip(b.iter_mut())
        {
            *r = lr[usize::from(px[0])];
            *g = lg[usize::from(px[1])];
            *b = lb[usize::from(px[2])];
        }
        Ok(())
    }
}

/// The model folder to use when none is configured: the bundled classifier
/// (`screenline-ref-0.1`, for pseudo-colour scans) — see [`bundled_model_dir`].
pub fn default_model_dir() -> Option<PathBuf> {
    bundled_model_dir("screenline-ref-0.1")
}

/// The bundled detector (`screenline-ref-0.2`): dual-energy pairs of line-sized machines,
/// and their pseudo-colour images, with boxes. What the demo and `screenline screen` use
/// for pairs when no model is given.
pub fn default_detector_dir() -> Option<PathBuf> {
    bundled_model_dir("screenline-ref-0.2")
}

/// The bundled model folder `NAME`: under `models/` next to the working directory, then in
/// the tree this binary was built from, then installed.
pub fn bundled_model_dir(name: &str) -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("models").join(name),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(name),
        PathBuf::from("/usr/share/screenline/models").join(name),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("manifest.json").is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec {
        InputSpec {
            name: "image".into(),
            width: 64,
            height: 64,
            channels: 3,
            layout: "NCHW".into(),
            colour: "rgb".into(),
            resize: "bilinear".into(),
            scale: 1.0 / 255.0,
            mean: [0.9, 0.8, 0.7],
            std: [0.1, 0.2, 0.3],
        }
    }

    /// The SIMD resize is an antialiased filter like training's PIL bilinear: on a real
    /// generated scan it stays within a couple of grey levels of `image`'s triangle filter
    /// (the same kind of filter), where a 4-tap bilinear sample would be far off.
    #[test]
    fn resize_is_antialiased_like_the_training_filter() {
        let scan = xraygen::render(xraygen::random_spec(77, 0.5), 77);
        let mut prep = Preprocessor::new(&spec()).unwrap();
        let mut out = vec![0f32; prep.len()];
        prep.run(&scan.rgb, &mut out).unwrap();
        let reference =
            image::imageops::resize(&scan.rgb, 64, 64, image::imageops::FilterType::Triangle);
        let s = spec();
        let plane = 64 * 64;
        let mut total = 0f64;
        for (i, px) in reference.pixels().enumerate() {
            for c in 0..3 {
                // Back from normalised to grey levels.
                let v = (out[c * plane + i] * s.std[c] + s.mean[c]) / s.scale;
                total += f64::from((v - f32::from(px.0[c])).abs());
            }
        }
        let mean_diff = total / (plane * 3) as f64;
        assert!(mean_diff < 2.0, "mean difference {mean_diff} grey levels");
    }

    #[test]
    fn normalisation_is_per_channel_chw() {
        let mut prep = Preprocessor::new(&spec()).unwrap();
        let img = image::RgbImage::from_pixel(100, 80, image::Rgb([255, 0, 51]));
        let mut out = vec![0f32; prep.len()];
        prep.run(&img, &mut out).unwrap();
        let plane = 64 * 64;
        let want = [(1.0 - 0.9) / 0.1, (0.0 - 0.8) / 0.2, (0.2 - 0.7) / 0.3];
        for c in 0..3 {
            for v in &out[c * plane..(c + 1) * plane] {
                assert!(
                    (v - want[c]).abs() < 1e-4,
                    "channel {c}: {v} vs {}",
                    want[c]
                );
            }
        }
    }

    #[test]
    fn unknown_resize_or_zero_std_is_refused() {
        let mut s = spec();
        s.resize = "nearest".into();
        assert!(Preprocessor::new(&s).err().unwrap().contains("\"nearest\""));
        let mut s = spec();
        s.std[1] = 0.0;
        assert!(Preprocessor::new(&s).err().unwrap().contains("std"));
    }

    /// A manifest names its schema: the two known ones parse as themselves, anything else —
    /// another schema, no schema, not JSON, a v2 manifest with a v1's fields — is refused
    /// with a sentence that says what is wrong.
    #[test]
    fn manifests_parse_by_their_schema_and_anything_else_is_refused() {
        let v1 = std::fs::read(
            default_model_dir()
                .expect("model 0.1")
                .join("manifest.json"),
        )
        .expect("manifest");
        assert!(matches!(Manifest::parse(&v1), Ok(Manifest::V1(_))));
        let e = Manifest::parse(br#"{"schema":"screenline.model.v9"}"#).expect_err("v9");
        assert!(
            e.contains("screenline.model.v9") && e.contains(SCHEMA_V2),
            "{e}"
        );
        assert!(Manifest::parse(br#"{"name":"x"}"#).is_err());
        assert!(Manifest::parse(b"\xff not json").is_err());
        let v1_as_v2 = String::from_utf8_lossy(&v1).replace(SCHEMA_V1, SCHEMA_V2);
        let e = Manifest::parse(v1_as_v2.as_bytes()).expect_err("v1 fields under v2");
        assert!(
            e.contains("unknown field") || e.contains("missing field"),
            "{e}"
        );
    }
}
