//! The `screenline` command line. Every failure ends here, once, with a message that says
//! what to do and a non-zero exit.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use screenline::config::Config;
use screenline::line::waybill::{today, Framing};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "screenline",
    version,
    about = "Parcel-screening edge appliance for postal X-ray lines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the appliance.
    Run {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs the whole system on this machine with simulated lines, an X-ray image generator
    /// and an embedded MQTT broker.
    Demo {
        /// Stop after this many parcels per line have been decided and every report acknowledged.
        #[arg(long)]
        parcels: Option<u64>,
        /// Parcels per second per line.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of lines.
        #[arg(long, default_value_t = 1)]
        lines: usize,
        /// Number of appliances on the one broker, the lines spread over them (at least one
        /// line each), sharing pseudonymous sightings so that a sender's split shipment across
        /// them is caught.
        #[arg(long, default_value_t = 1)]
        appliances: usize,
        /// Use this broker (mqtt://HOST:PORT) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
        /// Where to serve the console.
        #[arg(long, default_value = "127.0.0.1:8080")]
        console: SocketAddr,
        /// The model folder (default: the bundled detector, screenline-ref-0.2, for a
        /// line-sized `--scanner`; the bundled classifier, screenline-ref-0.1, otherwise).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Traffic at the rates of published pilots (about 0.5 % flagged) instead of the
        /// showcase, which has every reason within the first 100 parcels.
        #[arg(long, conflicts_with = "wave")]
        realistic: bool,
        /// Every parcel counterfeit: a wave of flagged reports, to load the feed.
        #[arg(long)]
        wave: bool,
        /// Keep the store (records, outbox, images) in this folder, across runs, instead of
        /// a temporary one.
        #[arg(long)]
        data: Option<PathBuf>,
        /// What the X-ray machines write beside each image: a sidecar naming the waybill,
        /// one with only the capture time, or none (the line then joins by time); `mix` is a
        /// site's fleet: line 1's machine names the waybill, lines 2, 4, 6, 8 give the time,
        /// lines 3, 5, 7 nothing.
        #[arg(long, value_enum, default_value_t = screenline::demo::Sidecars::Mix)]
        sidecars: screenline::demo::Sidecars,
        /// The X-ray machines' profile: `small` writes one pseudo-colour PNG per scan, the
        /// line-sized `6550` and `100100` a 16-bit dual-energy pair NAME.high.png + NAME.low.png.
        #[arg(long, value_enum, default_value_t = ScannerProfile::Small)]
        scanner: ScannerProfile,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Waybill-reader tools.
    Waybill {
        #[command(subcommand)]
        command: WaybillCommand,
    },
    /// Screens one parcel offline and prints the decision as JSON.
    ///
    /// Leave out `--waybill` or `--image` to screen a parcel as the line sees one whose read
    /// or image never arrived (`no_read`, `no_image`).
    #[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["waybill", "image"])))]
    Screen {
        /// The waybill record (as the reader sends it: a bare number or JSON).
        #[arg(long)]
        waybill: Option<PathBuf>,
        /// The X-ray image (the high-energy half of a dual-energy pair).
        #[arg(long)]
        image: Option<PathBuf>,
        /// The low-energy half of a dual-energy pair (16-bit grey).
        #[arg(long, requires = "image")]
        low_energy: Option<PathBuf>,
        /// The model folder (default: the bundled detector, screenline-ref-0.2, for a pair;
        /// the bundled classifier, screenline-ref-0.1, for one image).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Take the rules (watch-list, dictionary, policy, thresholds) from this configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Keep split-shipment history in this store folder (not one a running appliance
        /// uses), so that repeated runs see a sender's earlier parcels.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Dataset tools.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Model tools.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Store tools.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Console users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Verifies the on-disk store (stop the appliance first) and says how to recover.
    Check {
        /// The data folder (the configuration's data_dir).
        #[arg(long)]
        data: PathBuf,
        /// Print the findings as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Rewrites the database into a fresh one (stop the appliance first): gives back the
    /// space sled keeps after many reports have left the outbox. Checked before it replaces
    /// the store; safe to interrupt.
    Compact {
        /// The data folder (the configuration's data_dir).
        #[arg(long)]
        data: PathBuf,
    },
    /// Brings what can still be read from a set-aside (damaged) store — unsent reports,
    /// records, reviews, the audit log — into the store in DATA (stop the appliance first).
    /// The set-aside folder is only read (from a copy), never changed but for a mark.
    Recover {
        /// The data folder (the configuration's data_dir).
        #[arg(long)]
        data: PathBuf,
        /// The set-aside folder, e.g. DATA/db.broken-20260101T120000Z.
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Adds a console user. The password is asked for on the terminal, or read as one line
    /// from stdin when stdin is not a terminal; it is stored only as an argon2id hash.
    Add {
        /// The user name: 1 to 32 of a-z, 0-9, '.', '_', '-'.
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The appliance's configuration (its data_dir holds the users).
        #[arg(
            long,
            default_value = "/etc/screenline/screenline.toml",
            conflicts_with = "data"
        )]
        config: PathBuf,
        /// The data folder, instead of reading it from the configuration.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Operator,
    Technician,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a configuration and explains every error.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum WaybillCommand {
    /// Reads raw reader bytes (a capture, or stdin) and prints one JSON line per record.
    Check {
        /// The capture; stdin if absent.
        file: Option<PathBuf>,
        /// How the reader frames records.
        #[arg(long, value_enum, default_value = "line")]
        framing: FramingArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FramingArg {
    Line,
    StxEtx,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Evaluates a model folder on a labelled dataset, through the line's own decode,
    /// preprocessing and inference: top-1 accuracy, per-category precision and recall,
    /// counterfeit AUROC, confusion matrix.
    Eval {
        /// The model folder (manifest.json and the .onnx file).
        model: PathBuf,
        /// The dataset folder (labels.csv and the images).
        dataset: PathBuf,
        /// Print one JSON object on stdout instead of the text report.
        #[arg(long)]
        json: bool,
        /// Also draw the confusion matrix into this PNG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Also draw the first scans with their labelled boxes and the model's detections,
        /// as NNN.png files in this folder.
        #[arg(long)]
        draw: Option<PathBuf>,
        /// How many scans `--draw` draws.
        #[arg(long, default_value_t = 8, requires = "draw")]
        draw_count: usize,
    },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Writes a labelled synthetic X-ray dataset.
    ///
    /// Without `--scanner`: pseudo-colour PNGs and labels.csv, as the reference model was
    /// trained on. With `--scanner`: that machine's scans and boxes.csv (one row per lot of
    /// goods) beside labels.csv; the line-sized profiles write 16-bit pairs.
    Generate {
        /// The dataset folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// How many scans.
        #[arg(long)]
        count: usize,
        /// Seed: the same seed writes the same dataset.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The simulated X-ray machine (see models/xraygen/PROFILES.md).
        #[arg(long, value_enum)]
        scanner: Option<ScannerProfile>,
        /// With a line-sized `--scanner`, also write each scan's pseudo-colour image
        /// (images/NNNNNN.png beside the pair).
        #[arg(long, requires = "scanner")]
        pseudo_colour: bool,
    },
}

/// A simulated X-ray machine, by the key `xraygen` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScannerProfile {
    /// Small pseudo-colour scans, 224–288 px a side (the reference model's).
    Small,
    /// A 650 × 500 mm tunnel: 812 px across the belt, 16-bit dual-energy pairs.
    #[value(name = "6550")]
    S6550,
    /// A 1000 × 1000 mm tunnel: 1250 px across the belt, 16-bit dual-energy pairs.
    #[value(name = "100100")]
    S100100,
}

impl From<ScannerProfile> for xraygen::Scanner {
    fn from(p: ScannerProfile) -> xraygen::Scanner {
        match p {
            ScannerProfile::Small => xraygen::Scanner::Small,
            ScannerProfile::S6550 => xraygen::Scanner::S6550,
            ScannerProfile::S100100 => xraygen::Scanner::S100100,
        }
    }
}

fn init_logging(quiet: bool) {
    // The demo's embedded broker logs every client that goes away as an error: noise here.
    let default = if quiet {
        "warn,rumqttd=off"
    } else {
        "info,rumqttd=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    // The console's log page keeps information and worse, whatever stderr shows.
    let console =
        screenline::logbuf::LogBufferLayer.with_filter(tracing_subscriber::filter::filter_fn(
            |m| *m.level() <= tracing::Level::INFO && !m.target().starts_with("rumqttd"),
        ));
    tracing_subscriber::registry()
        .with(stderr)
        .with(console)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Demo { json: true, .. })
        || !matches!(cli.command, Command::Run { .. } | Command::Demo { .. });
    init_logging(quiet);
    if let Err(e) = dispatch(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => runtime()?.block_on(run(config)),
        Command::Demo {
            parcels,
            rate,
            seed,
            lines,
            appliances,
            broker,
            console,
            model,
            json,
            realistic,
            wave,
            data,
            sidecars,
            scanner,
        } => {
            if !(rate > 0.0 && rate <= 100.0) {
                bail!(
                    "--rate {rate}: give parcels per second per line, more than 0 and at most 100"
                );
            }
            if !(1..=8).contains(&lines) {
                bail!("--lines {lines}: give 1 to 8 lines");
            }
            if !(1..=8).contains(&appliances) {
                bail!("--appliances {appliances}: give 1 to 8 appliances");
            }
            let opts = screenline::demo::DemoOptions {
                parcels,
                rate,
                seed,
                lines: lines.max(appliances),
                appliances,
                broker,
                console,
                model_dir: model,
                mix: if realistic {
                    screenline::demo::traffic::Mix::Realistic
                } else if wave {
                    screenline::demo::traffic::Mix::Wave
                } else {
                    screenline::demo::traffic::Mix::Showcase
                },
                data_dir: data,
                peer_sightings_per_s: 0.0,
            };
            let machines = screenline::demo::XrayMachines {
                sidecars,
                scanner: scanner.into(),
                pool: None,
            };
            let summary = runtime()?.block_on(screenline::demo::run_with(opts, machines, json))?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "{} parcels: {} cleared, {} flagged, {} manual; {} reports acknowledged by the broker",
                    summary.parcels, summary.cleared, summary.flagged, summary.manual, summary.reports_acked
                );
                let reasons: Vec<String> = summary
                    .reasons
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect();
                println!("reasons: {}", reasons.join(", "));
                println!(
                    "joins: {} records checked, {} wrong, {} parcels to manual inspection unjoined; {} scans late",
                    summary.joins_checked, summary.wrong_joins, summary.unjoined_manual, summary.scans_late
                );
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let c = Config::load(&file)?;
            println!(
                "{}: valid ({} line(s), broker {}, console {})",
                file.display(),
                c.lines.len(),
                c.mqtt.url,
                c.console.listen
            );
            Ok(())
        }
        Command::Waybill {
            command: WaybillCommand::Check { file, framing },
        } => waybill_check(file, framing),
        Command::Screen {
            waybill,
            image,
            low_energy,
            model,
            config,
            data,
        } => {
            let verdict =
                screenline::offline::screen_files(waybill, image, low_energy, model, config, data)?;
            println!("{}", serde_json::to_string_pretty(&verdict)?);
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Check { data, json },
        } => {
            let report = screenline::store::check::check(&data)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: schema version {}{}, {} records ({} flagged), {} reports waiting for the broker, {} reviews, {} audit entries, {} images kept, {} evicted by the disk budget, {} missing, {} without a record; database {} MB on disk",
                    data.display(),
                    report.schema_version,
                    if report.schema_version < screenline::store::SCHEMA_VERSION { " (migrated at the next start)" } else { "" },
                    report.records,
                    report.flagged,
                    report.outbox,
                    report.reviews,
                    report.audit_entries,
                    report.images,
                    report.images_evicted,
                    report.images_missing,
                    report.orphan_images,
                    report.db_bytes >> 20
                );
                for n in &report.notes {
                    println!("note: {n}");
                }
            }
            fail_on_problems(&report.problems, !json, || {
                format!("problem(s) in the store. {}", report.advice())
            })
        }
        Command::Store {
            command: StoreCommand::Compact { data },
        } => {
            let c = screenline::store::compact::compact(&data)?;
            println!(
                "{}: database compacted from {:.1} MB to {:.1} MB",
                data.display(),
                c.bytes_before as f64 / 1048576.0,
                c.bytes_after as f64 / 1048576.0
            );
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Recover { data, from },
        } => {
            let r = screenline::store::recover::recover(&data, &from)?;
            println!(
                "recovered from {}: {} records, {} reports (now in the outbox), {} reviews, {} audit entries; {} already present{}",
                from.display(),
                r.records,
                r.reports,
                r.reviews,
                r.audit_entries,
                r.already_present,
                if r.settings_rebuilt { "; sled's settings file was rebuilt in the copy" } else { "" }
            );
            fail_on_problems(&r.problems, true, || {
                format!(
                    "part(s) could not be read; they stay in {} — keep the folder for the vendor",
                    from.display()
                )
            })
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    role,
                    config,
                    data,
                },
        } => user_add(&name, role, &config, data),
        Command::Dataset {
            command:
                DatasetCommand::Generate {
                    out,
                    count,
                    seed,
                    scanner,
                    pseudo_colour,
                },
        } => {
            let bar = progress_bar(count, "generating");
            let progress = |done: usize, _| bar.set_position(done as u64);
            let written = match scanner {
                None => xraygen::write_dataset(&out, count, seed, progress)
                    .map(|()| "images and labels.csv".to_owned()),
                Some(profile) => {
                    let scanner = xraygen::Scanner::from(profile);
                    let options = xraygen::DatasetOptions {
                        scanner,
                        pseudo_colour,
                    };
                    xraygen::write_dataset_with(&out, count, seed, options, progress).map(|()| {
                        format!(
                            "{} scans{}, labels.csv and boxes.csv",
                            scanner.key(),
                            if scanner.writes_pairs() {
                                " (16-bit pairs)"
                            } else {
                                ""
                            }
                        )
                    })
                }
            }
            .with_context(|| format!("writing the dataset to {}", out.display()))?;
            bar.finish_and_clear();
            eprintln!("{count} {written} written to {}", out.display());
            Ok(())
        }
        Command::Model {
            command:
                ModelCommand::Eval {
                    model,
                    dataset,
                    json,
                    plot,
                    draw,
                    draw_count,
                },
        } => model_eval(
            &model,
            &dataset,
            json,
            plot.as_deref(),
            draw.as_deref().map(|d| (d, draw_count)),
        ),
    }
}

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal, so logs
/// and CI output stay clean.
fn progress_bar(total: usize, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn model_eval(
    model_dir: &std::path::Path,
    dataset: &std::path::Path,
    json: bool,
    plot: Option<&std::path::Path>,
    draw: Option<(&std::path::Path, usize)>,
) -> anyhow::Result<()> {
    use screenline::screen::eval;
    use screenline::screen::model::{init_runtime, Model};
    let env = init_runtime(None)?;
    let mut model = Model::load(model_dir, &env, 1)?;
    // Count the rows first so the bar knows its length; evaluate() reads them again, cheap.
    let total = eval::read_labels(dataset)?.len();
    let bar = progress_bar(total, "evaluating");
    let report = eval::evaluate(&mut model, dataset, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if let Some(path) = plot {
        eval::plot_confusion(&report, path)?;
    }
    let drawn = match draw {
        Some((dir, count)) => eval::draw_scans(&mut model, dataset, count, dir)?,
        None => Vec::new(),
    };
    if json {
        /// The report, with what was evaluated on what.
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a eval::Report,
            model: &'a screenline::domain::ModelInfo,
            dataset: String,
        }
        let out = Out {
            report: &report,
            model: model.info(),
            dataset: dataset.display().to_string(),
        };
        println!(
            "{}",
            serde_json::to_string(&out).context("encoding the report")?
        );
    } else {
        let info = model.info();
        println!(
            "model {} {} on {}",
            info.name,
            info.version,
            dataset.display()
        );
        print!("{}", eval::render_text(&report));
        if let Some(path) = plot {
            println!("confusion matrix plot: {}", path.display());
        }
        for path in drawn {
            println!("drawn: {}", path.display());
        }
    }
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return screenline::safe_mode::run(&path, e).await,
    };
    let appliance = screenline::app::Appliance::start(config).await?;
    appliance
        .run_until(async {
            screenline::supervise::stop_signal().await;
            tracing::info!("stopping");
        })
        .await
}

fn user_add(
    name: &str,
    role: RoleArg,
    config: &std::path::Path,
    data: Option<PathBuf>,
) -> anyhow::Result<()> {
    use screenline::console::auth::{Role, Users};
    let data_dir = match data {
        Some(d) => d,
        None => {
            Config::load(config)
                .with_context(|| {
                    format!(
                        "reading the data folder from {}; or pass --data DIR",
                        config.display()
                    )
                })?
                .data_dir
        }
    };
    let password = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let p = rpassword::prompt_password(format!("password for {name}: "))?;
        if rpassword::prompt_password("again: ")? != p {
            bail!("the passwords differ; nothing was changed");
        }
        p
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let role = match role {
        RoleArg::Operator => Role::Operator,
        RoleArg::Technician => Role::Technician,
    };
    Users::in_data_dir(&data_dir)
        .add(name, role, &password)
        .context("adding the user")?;
    println!(
        "{name} added as {} to {}",
        role.key(),
        data_dir.join("users.json").display()
    );
    Ok(())
}

fn waybill_check(file: Option<PathBuf>, framing: FramingArg) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    match &file {
        Some(f) => {
            bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
        }
    }
    let framing = match framing {
        FramingArg::Line => Framing::Line,
        FramingArg::StxEtx => Framing::StxEtx,
    };
    for checked in screenline::line::waybill::check(&bytes, framing, today()) {
        println!("{}", serde_json::to_string(&checked)?);
    }
    Ok(())
}

/// Prints each problem (when `print`), then fails with their count and `what` if there are any.
fn fail_on_problems(
    problems: &[String],
    print: bool,
    what: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if print {
        for p in problems {
            println!("problem: {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{} {}", problems.len(), what())
    }
}
