//! `screenline screen`: one parcel screened from files, exactly as the line screens it
//! ([`crate::screen::screen_parcel`]), for a technician checking a model or a rule, or a waybill and
//! image from an incident.

use crate::config::Config;
use crate::domain::{Decision, ModelInfo, Reason, Scores};
use crate::line::waybill::{parse_record, today};
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::PathBuf;

/// What `screenline screen` prints.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub decision: Decision,
    pub reasons: Vec<Reason>,
    pub scores: Option<Scores>,
    pub model: ModelInfo,
    /// The image's SHA-256, as a report would carry it.
    pub image_sha256: Option<String>,
}

/// Screens the waybill record (a reader's JSON payload) and image files given (one image,
/// or with `low_energy` a dual-energy pair whose high half is `image`), with the
/// model and rules of `config` (or the bundled model and default rules); with `data`, with
/// that store's keys and split-shipment ledger.
pub fn screen_files(
    waybill: Option<PathBuf>,
    image: Option<PathBuf>,
    low_energy: Option<PathBuf>,
    model: Option<PathBuf>,
    config: Option<PathBuf>,
    data: Option<PathBuf>,
) -> anyhow::Result<Verdict> {
    use crate::domain::{Parcel, XrayScan};
    use crate::screen::model::{default_detector_dir, default_model_dir, init_runtime, Model};
    use crate::screen::rules::MemoryLedger;
    use crate::store::{KeyedHasher, Store};
    let config = config.map(|c| Config::load(&c)).transpose()?;
    let rules_config = config.as_ref().map(|c| c.rules.clone()).unwrap_or_default();
    let store = data.map(|d| Store::open(&d)).transpose()?;
    let mut rules = match &store {
        Some(s) => crate::screen::load_rules(
            &rules_config,
            s.hasher().clone(),
            Box::new(s.split_ledger()),
        ),
        None => crate::screen::load_rules(
            &rules_config,
            KeyedHasher::random(),
            Box::new(MemoryLedger::default()),
        ),
    }
    .context("loading the rules")?;
    let model = model.or_else(|| config.as_ref().and_then(|c| c.model.dir.clone()));
    let record = match &waybill {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                parse_record(&text, today())
                    .with_context(|| format!("{} is not a waybill record", path.display()))?,
            )
        }
        None => None,
    };
    if let Some(image) = &image {
        if !image.is_file() {
            bail!("{} is not a file", image.display());
        }
    }
    let dir = match model {
        Some(d) => d,
        // A pair goes to the detector, if it is installed.
        None => low_energy
            .is_some()
            .then(default_detector_dir)
            .flatten()
            .or_else(default_model_dir)
            .context("no model folder found: pass --model DIR")?,
    };
    let env = init_runtime(
        config
            .as_ref()
            .and_then(|c| c.model.ort_dylib_path.as_deref()),
    )?;
    let mut model = Model::load(&dir, &env, 1)?;
    let now = std::time::SystemTime::now();
    let (waybill, findings) = match record {
        Some(r) => (Some(r.waybill), r.findings),
        None => (None, Vec::new()),
    };
    let parcel = Parcel {
        line_id: "offline".into(),
        seq: 0,
        epoch: None,
        entered_at: now,
        scan: image.map(|image| XrayScan {
            scan_id: image
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("scan")
                .into(),
            path: image,
            completed: std::time::Instant::now(),
            low_energy,
            waybill: waybill.as_ref().map(|w| w.waybill.clone()),
            captured_at: now,
        }),
        waybill,
        findings,
    };
    let s = crate::screen::screen_parcel(&mut model, &mut rules, parcel);
    if let Some(store) = &store {
        store.flush_blocking()?;
    }
    Ok(Verdict {
        decision: s.decision,
        image_sha256: s.evidence.as_ref().map(|e| e.image.sha256.clone()),
        reasons: s.reasons,
        scores: s.scores,
        model: s.model,
    })
}
