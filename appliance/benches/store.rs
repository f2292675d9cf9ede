//! The store and the feed, measured in one run:
//!
//! 1. durable records committed per second — one transaction and one flush per record (the
//!    skeleton's sink) beside group commit (64 per transaction and flush, today's sink);
//! 2. reports drained to a real local Mosquitto per second: the real `report::Feed` over a
//!    store pre-filled with a backlog, timed until the outbox is empty — which is also the
//!    backlog catch-up time;
//! 3. sled's size on disk before the fill, after it, after the drain, after a second fill and
//!    drain (does insert-then-remove grow without bound? sled #1333), and after
//!    `store compact`.
//!
//! `cargo bench -p screenline --bench store`. `SCREENLINE_BENCH_BACKLOG` sets the backlog
//! (default 100 000), `SCREENLINE_BENCH_SINGLE` the one-at-a-time records (default 2 000).

use screenline::config::Config;
use screenline::record::Record;
use screenline::screen::{model, Screener};
use screenline::store::owner::StoreHandle;
use screenline::store::retention::Retention;
use screenline::store::{compact, Commit, Store};
use screenline::supervise::Stages;
use screenline::telemetry::Telemetry;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A record and report shaped like the appliance's (sizes of a flagged parcel's).
fn record(i: usize) -> (String, Record, Vec<u8>) {
    let id = format!("{:013}-L{}-{i}", 1_764_000_000_000u64 + i as u64, i % 4);
    let record = json!({
        "record_id": id, "line_id": format!("L{}", i % 4), "seq": i,
        "entered_at": "2026-11-25T16:00:00.000Z", "screened_at": "2026-11-25T16:00:00.300Z",
        "waybill": format!("SF{:013}", i), "declared": {"goods": "运动鞋 sports shoes", "category": "apparel_footwear", "value_cny": 120.0, "quantity": 2},
        "sender": {"name": "张三", "id_type": "resident_id", "id_number": "11010519491231002X", "phone": "13800138000", "address": "北京市朝阳区某某路 1 号"},
        "recipient": {"name": "李四", "phone": "13900139000", "address": "广东省深圳市南山区科技园 1 号"},
        "decision": "flag",
        "reasons": [{"code": "counterfeit_suspected", "zh": "疑似假冒商品", "en": "suspected counterfeit (score 0.93, apparel_footwear)"}],
        "scores": {"counterfeit": 0.93, "category": {"apparel_footwear": 0.91, "bags_leather": 0.04, "cosmetics": 0.02, "electronics": 0.01, "other": 0.02}},
        "model": {"name": "screenline-ref", "version": "0.1.0", "sha256": "00"}, "image": null,
        "image_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "report_id": format!("SZ01-L1-{i:016x}"),
    });
    let report = serde_json::to_vec(&json!({
        "schema": "screenline.report.v1", "report_id": format!("SZ01-L1-{i:016x}"),
        "record": record, "thumbnail_jpeg_b64": "A".repeat(1500),
    }))
    .unwrap_or_default();
    let record = serde_json::from_value(record).expect("a record");
    (id, record, report)
}

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sl-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Commits `items` in groups of `group`; returns the seconds taken.
/// Each group is one durable write through the store thread, as the sink commits.
async fn commit_all(
    store: &StoreHandle,
    items: &[(String, Record, Vec<u8>)],
    group: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    for chunk in items.chunks(group) {
        let commits: Vec<Commit> = chunk
            .iter()
            .map(|(id, rec, rep)| Commit {
                key: id.clone(),
                record: rec.clone(),
                report: Some((id.clone(), "reports/flagged".into(), rep.clone())),
                waybill: rec.waybill.as_ref().map(|w| w.to_string()),
                counts: vec![
                    screenline::telemetry::Counter::ParcelsDecided,
                    screenline::telemetry::Counter::Decided(screenline::domain::Decision::Flag),
                ],
            })
            .collect();
        store.write(move |s| s.commit_counted(&commits)).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn open(dir: &Path) -> anyhow::Result<StoreHandle> {
    Ok(StoreHandle::start(Store::open(dir)?, dir)?)
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &Path) -> anyhow::Result<(Broker, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"),
    )?;
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("mosquitto must be installed (tests/setup.sh): {e}"))?;
    let broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "mosquitto did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((broker, port))
}

/// Runs the real feed over `store` until its outbox is empty; returns the seconds taken.
async fn drain(store: StoreHandle, data: &Path, port: u16) -> anyhow::Result<f64> {
    let config = Config::parse(
        &format!(
            r#"
site_id = "SZ01"
appliance_id = "bench"
data_dir = "{}"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[[lines]]
id = "L1"
reader_port = "/dev/null"
controller_port = "/dev/null"
xray_dir = "/nonexistent"
"#,
            data.display()
        ),
        Path::new("bench.toml"),
    )?;
    let telemetry = Arc::new(Telemetry::default());
    let wake = Arc::new(tokio::sync::Notify::new());
    let feed = screenline::report::Feed::new(
        &config.feed(),
        store.clone(),
        screener(&config, &store)?,
        wake.clone(),
        telemetry,
        Arc::new(Stages::default()).stage("feed"),
        None,
    )
    .await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let t = Instant::now();
    let task = tokio::spawn(feed.run(shutdown.clone()));
    wake.notify_one();
    let deadline = t + Duration::from_secs(900);
    while store.outbox_len() > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the outbox did not drain: {} left",
            store.outbox_len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = task.await;
    Ok(secs)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn main() -> anyhow::Result<()> {
    let backlog = env_usize("SCREENLINE_BENCH_BACKLOG", 100_000);
    let single = env_usize("SCREENLINE_BENCH_SINGLE", 2_000);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        println!(
            "store and feed ({} cores; flagged records of ~{} B with a ~{} B report)",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            serde_json::to_vec(&record(0).1)?.len(),
            record(0).2.len()
        );

        // 1. Durable commits.
        let items: Vec<_> = (0..backlog.max(single)).map(record).collect();
        let dir = temp("single");
        let store = open(&dir)?;
        let one = commit_all(&store, &items[..single], 1).await?;
        drop(store);
        settle().await;
        let _ = std::fs::remove_dir_all(&dir);
        let dir = temp("group");
        let store = open(&dir)?;
        let n_group = single.max(20_000).min(items.len());
        let grouped = commit_all(&store, &items[..n_group], GROUP).await?;
        drop(store);
        settle().await;
        let _ = std::fs::remove_dir_all(&dir);
        let (r1, rg) = (single as f64 / one, n_group as f64 / grouped);
        println!("\ndurable commits (record + report in the outbox, flushed)");
        println!("{:<24} {:>9} {:>9} {:>12}", "mode", "records", "seconds", "records/s");
        println!("{:<24} {:>9} {:>9.2} {:>12.0}", "one at a time", single, one, r1);
        println!("{:<24} {:>9} {:>9.2} {:>12.0}", format!("group of {GROUP}"), n_group, grouped, rg);
        println!("group / one at a time: {:.1}x   (target >= 5000 records/s: {})", rg / r1, if rg >= 5000.0 { "met" } else { "NOT met" });

        // 2 and 3. A backlog drained to Mosquitto, twice, with sled's size along the way.
        let dir = temp("drain");
        std::fs::create_dir_all(&dir)?;
        let (_broker, port) = start_broker(&dir)?;
        let data = dir.join("data");
        let store = open(&data)?;
        let empty = store_size(&store).await?;
        let fill = commit_all(&store, &items[..backlog], GROUP).await?;
        let filled = store_size(&store).await?;
        let secs = drain(store.clone(), &data, port).await?;
        let drained = store_size(&store).await?;
        commit_all(&store, &items[..backlog].iter().map(|(id, r, p)| (format!("{id}-b"), r.clone(), p.clone())).collect::<Vec<_>>(), GROUP).await?;
        let secs2 = drain(store.clone(), &data, port).await?;
        let drained2 = store_size(&store).await?;
        drop(store);
        settle().await;
        let c = compact::compact(&data)?;
        println!("\nbacklog of {backlog} reports drained by the real feed to Mosquitto on 127.0.0.1:{port} (window 32)");
        println!("{:<24} {:>9} {:>12}", "", "seconds", "reports/s");
        println!("{:<24} {:>9.2} {:>12.0}", "pre-fill (group commit)", fill, backlog as f64 / fill);
        println!("{:<24} {:>9.2} {:>12.0}", "drain 1 (catch-up)", secs, backlog as f64 / secs);
        println!("{:<24} {:>9.2} {:>12.0}", "drain 2 (catch-up)", secs2, backlog as f64 / secs2);
        println!("drain / target 5000 reports/s: {:.2}", backlog as f64 / secs / 5000.0);
        println!("\nsled size on disk (MB; records stay, reports leave the outbox)");
        println!("  empty {:.1} → filled {:.1} → drained {:.1} → refilled and drained {:.1} → compacted {:.1} (compact read {:.1})",
            mb(empty), mb(filled), mb(drained), mb(drained2), mb(c.bytes_after), mb(c.bytes_before));
        let _ = std::fs::remove_dir_all(&dir);

        // Soak: the same keys' worth of churn again and again — 20 000 records and reports in,
        // acknowledged, and deleted by the retention sweep — to see whether sled's files level
        // off or grow with every cycle.
        let dir = temp("soak");
        let store = open(&dir)?;
        let cycle = 20_000.min(items.len());
        print!("\nsoak, {cycle} records + reports in, acked and deleted per cycle; sled MB after each:");
        for c in 0..8 {
            let batch: Vec<_> = items[..cycle]
                .iter()
                .map(|(id, r, p)| (format!("{id}-{c}"), r.clone(), p.clone()))
                .collect();
            commit_all(&store, &batch, GROUP).await?;
            let ids: Vec<String> = batch.iter().map(|(id, _, _)| id.clone()).collect();
            store
                .write(move |s| {
                    for id in &ids {
                        s.ack(id.as_bytes())?;
                    }
                    Ok(())
                })
                .await?;
            // The real retention sweep, its clock 31 days after these parcels.
            let later = std::time::UNIX_EPOCH
                + Duration::from_millis(1_764_000_000_000)
                + Duration::from_secs(31 * 86_400);
            let swept = store
                .write(move |s| {
                    s.sweep(
                        later,
                        &Retention {
                            keep_for: Duration::from_secs(30 * 86_400),
                            budget_bytes: None,
                        },
                    )
                })
                .await?;
            anyhow::ensure!(swept.expired_records == cycle, "sweep deleted {}", swept.expired_records);
            print!(" {:.0}", mb(store_size(&store).await?));
        }
        println!();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

async fn store_size(store: &StoreHandle) -> anyhow::Result<u64> {
    Ok(store.read(|s| s.db_size()).await?)
}

/// Lets a dropped store thread finish its last flush and release the folder's lock.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The screening stage the feed applies regulator commands to: the real model and rules.
fn screener(config: &Config, store: &StoreHandle) -> anyhow::Result<Arc<Screener>> {
    let dir = model::default_model_dir().ok_or_else(|| anyhow::anyhow!("no bundled model"))?;
    let env = model::init_runtime(config.model.ort_dylib_path.as_deref())?;
    let model = model::Model::load(&dir, &env, 1)?;
    let rules = screenline::screen::load_rules(
        &config.rules,
        store.hasher().clone(),
        Box::new(store.split_ledger(None)),
    )?;
    Ok(Screener::new(model, rules))
}
