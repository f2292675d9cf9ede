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

/// Everything in which the graph's inputs and outputs disagree with the manifest, each as
/// one sentence naming the manifest's value and the graph's; empty when they agree.
///
/// The line feeds `[N, channels, height, width]` float32 and reads `[N, labels]` and
/// `[N, 1]`, with N the batch (dynamic, for batched inference). A dimension the graph
/// leaves symbolic (-1) is taken as agreeing, except that the batch axis must be one.
pub fn graph_differences(session: &Session, manifest: &Manifest) -> Vec<String> {
    use ort::value::{Outlet, TensorElementType};
    let mut out = Vec::new();
    let describe = |o: &Outlet| -> String {
        match (o.dtype().tensor_type(), o.dtype().tensor_shape()) {
            (Some(t), Some(s)) => format!("{} {:?} {t:?}", o.name(), &s[..]),
            _ => format!("{} (not a tensor)", o.name()),
        }
    };
    // Checks one tensor against [dynamic batch, dims...]: (what, manifest value) per dim.
    let check = |out: &mut Vec<String>, o: &Outlet, role: &str, dims: &[(&str, i64)]| {
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
        if shape.len() != dims.len() + 1 {
            out.push(format!(
                "{role} {:?} has shape {:?} (rank {}), the manifest implies rank {} [N, {}]",
                o.name(),
                &shape[..],
                shape.len(),
                dims.len() + 1,
                dims.iter()
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
        for ((what, want), got) in dims.iter().zip(&shape[1..]) {
            if *got != -1 && got != want {
                out.push(format!(
                    "{role} {:?}: the manifest says {what} {want}, the graph has {got}",
                    o.name()
                ));
            }
        }
    };
    let i = &manifest.input;
    match session.inputs().iter().find(|o| o.name() == i.name) {
        None => out.push(format!(
            "the manifest's input {:?} is not in the graph, which has inputs [{}]",
            i.name,
            session
                .inputs()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(o) => check(
            &mut out,
            o,
            "input",
            &[
                ("channels", i64::from(i.channels)),
                ("height", i64::from(i.height)),
                ("width", i64::from(i.width)),
            ],
        ),
    }
    for extra in session.inputs().iter().filter(|o| o.name() != i.name) {
        out.push(format!(
            "the graph has an input {} the manifest does not name (the line feeds only {:?})",
            describe(extra),
            i.name
        ));
    }
    let outputs = [
        (
            &manifest.outputs.category,
            "category output",
            manifest.labels.len() as i64,
            "labels",
        ),
        (
            &manifest.outputs.counterfeit,
            "counterfeit output",
            1,
            "width",
        ),
    ];
    for (name, role, width, what) in outputs {
        match session.outputs().iter().find(|o| o.name() == name.as_str()) {
            None => out.push(format!(
                "the manifest's {role} {name:?} is not in the graph, which has outputs [{}]",
                session
                    .outputs()
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(o) => check(&mut out, o, role, &[(what, width)]),
        }
    }
    out
}

/// A loaded model, ready to screen.
pub struct Model {
    session: Session,
    manifest: Manifest,
    info: ModelInfo,
    thresholds: BTreeMap<Category, f32>,
    prep: Preprocessor,
    /// The input tensor's buffer, reused between parcels.
    input: Vec<f32>,
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
        let differences = graph_differences(&session, &manifest);
        if !differences.is_empty() {
            return Err(mismatch(differences.join("; ")));
        }
        let info = ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256,
        };
        let prep = Preprocessor::new(&manifest.input)
            .map_err(|why| mismatch(format!("manifest input: {why}")))?;
        let mut model = Model {
            session,
            manifest,
            info,
            thresholds,
            prep,
            input: Vec::new(),
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

    /// Resizes and normalises an image into a fresh NCHW tensor (for tools and benches;
    /// [`Model::infer`] reuses its own buffer).
    pub fn preprocess(&mut self, rgb: &image::RgbImage) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0f32; self.prep.len()];
        self.prep.run(rgb, &mut out)?;
        Ok(out)
    }

    /// Scores one image.
    pub fn infer(&mut self, rgb: &image::RgbImage) -> Result<Scores, ModelError> {
        let mut scores = self.infer_batch(&[rgb])?;
        scores
            .pop()
            .ok_or_else(|| ModelError::Ort("the model returned no scores".into()))
    }

    /// Scores several images in one `Session::run` (the graph's batch axis is dynamic);
    /// the scores come back in the images' order.
    pub fn infer_batch(&mut self, images: &[&image::RgbImage]) -> Result<Vec<Scores>, ModelError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let one = self.prep.len();
        // One buffer for the model's input, kept between calls: no allocation per parcel.
        self.input.resize(one * images.len(), 0.0);
        for (rgb, out) in images.iter().zip(self.input.chunks_exact_mut(one)) {
            self.prep.run(rgb, out)?;
        }
        let i = &self.manifest.input;
        let shape = [images.len(), 3, i.height as usize, i.width as usize];
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => tensor])?;
        let (_, probs) =
            outputs[self.manifest.outputs.category.as_str()].try_extract_tensor::<f32>()?;
        let (_, cf) =
            outputs[self.manifest.outputs.counterfeit.as_str()].try_extract_tensor::<f32>()?;
        let k = Category::ALL.len();
        if probs.len() != k * images.len() || cf.len() != images.len() {
            return Err(ModelError::Ort(format!(
                "outputs have {} category scores and {} counterfeit scores for {} images; expected {} and {}",
                probs.len(),
                cf.len(),
                images.len(),
                k * images.len(),
                images.len()
            )));
        }
        Ok(probs
            .chunks_exact(k)
            .zip(cf.iter())
            .map(|(p, c)| Scores {
                category: Category::ALL
                    .iter()
                    .copied()
                    .zip(p.iter().copied())
                    .collect(),
                counterfeit: *c,
            })
            .collect())
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
}
