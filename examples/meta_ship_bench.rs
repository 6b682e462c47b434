//! Metadata shipping benchmark: what durability costs in uploads for a
//! filesystem of N files under a steady office workload, shipped by change
//! (WAL segments) against what a full snapshot per interval (the previous
//! scheme) costs in the same run. The filesystem is built straight through
//! the metadata layer (FUSE would take hours at 10 million files) in a
//! local store made by mkfs, so it can be mounted afterwards (`--keep`).
//!
//!   cargo run --release --example meta_ship_bench -- --files 1000000 \
//!       [--seconds 60] [--interval 10] [--dir /var/tmp/x] [--keep]

use std::sync::Arc;
use std::time::{Duration, Instant};
use swiftgate::data::Compression;
use swiftgate::fs::engine::{mkfs, MkfsOptions};
use swiftgate::meta::ship::{self, meta_codec, Shipper};
use swiftgate::meta::{Meta, ROOT_INO, S_IFDIR, S_IFREG};

struct Args {
    files: u64,
    seconds: u64,
    interval: u64,
    dir: Option<String>,
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        files: 10_000,
        seconds: 60,
        interval: 10,
        dir: None,
        keep: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = || v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--files" => a.files = next().parse().expect("--files N"),
            "--seconds" => a.seconds = next().parse().expect("--seconds N"),
            "--interval" => a.interval = next().parse().expect("--interval N"),
            "--dir" => a.dir = Some(next()),
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            o => panic!("unknown option {o}"),
        }
        i += 2;
    }
    a
}

/// A small, fast pseudo-random sequence (the workload, not security).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn main() {
    let a = args();
    let work = match &a.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("sg-shipbench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).unwrap();
    let store_dir = work.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = swiftgate::store::open(&format!("local://{}", store_dir.display())).unwrap();
    let params = mkfs(
        &store,
        &MkfsOptions {
            block_size: 4 << 20,
            compression: Compression::Zstd(3),
            passphrase: None,
            force: true,
            root_owner: None,
        },
    )
    .unwrap();
    // Where a mount keeps it: `<cache>/<uuid>/meta.db`.
    let dbdir = work.join("cache").join(&params.uuid);
    std::fs::create_dir_all(&dbdir).unwrap();
    let db = dbdir.join("meta.db");
    let codec = meta_codec(None);
    let r = ship::restore(&store, &codec, &db).unwrap();
    let meta = Arc::new(Meta::open(&db).unwrap());
    meta.kv_set(ship::KV_FS_UUID, params.uuid.as_bytes())
        .unwrap();
    meta.start_batching().unwrap();
    let shipper = Shipper::new(store.clone(), codec, meta.clone(), r.gen);

    // The tree: directories of 10,000 files, and one of 100,000.
    let t0 = Instant::now();
    let per_dir = 10_000u64;
    let mut dirs = Vec::new();
    let mut made = 0u64;
    let big = a.files >= 200_000;
    if big {
        let d = meta
            .mknod(ROOT_INO, b"big", S_IFDIR | 0o755, 0, 0, 0, None)
            .unwrap();
        for i in 0..100_000u64 {
            meta.mknod(
                d.ino,
                format!("f{i:06}.docx").as_bytes(),
                S_IFREG | 0o644,
                0,
                0,
                0,
                None,
            )
            .unwrap();
        }
        made += 100_000;
    }
    let mut n = 0;
    while made < a.files {
        let d = meta
            .mknod(
                ROOT_INO,
                format!("d{n:05}").as_bytes(),
                S_IFDIR | 0o755,
                0,
                0,
                0,
                None,
            )
            .unwrap();
        dirs.push(d.ino);
        for i in 0..per_dir.min(a.files - made) {
            let f = meta
                .mknod(
                    d.ino,
                    format!("report-{i:05}.xlsx").as_bytes(),
                    S_IFREG | 0o644,
                    0,
                    0,
                    0,
                    None,
                )
                .unwrap();
            meta.note_write(f.ino, 40_000 + i * 13 % 90_000, 0).unwrap();
            made += 1;
        }
        n += 1;
        if n % 100 == 0 {
            eprintln!("  {made} files ({:.0} s)", t0.elapsed().as_secs_f64());
        }
    }
    meta.commit().unwrap();
    let built = t0.elapsed();
    let t = Instant::now();
    shipper.ship_full_now().unwrap();
    let full_time = t.elapsed();
    let full = shipper.stats();
    let db_size = std::fs::metadata(&db).unwrap().len();

    // A steady office day: each second 5 files created and written, 5
    // touched, 2 renamed, 2 deleted, anywhere in the tree.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut created: Vec<(u64, String)> = Vec::new();
    let start = Instant::now();
    let mut next_ship = start + Duration::from_secs(a.interval);
    let mut intervals = 0u64;
    let mut ship_time = Duration::ZERO;
    let mut k = 0u64;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        let tick = Instant::now();
        for _ in 0..5 {
            let d = dirs[(rng.next() % dirs.len() as u64) as usize];
            let name = format!("new-{k}.docx");
            k += 1;
            let f = meta
                .mknod(d, name.as_bytes(), S_IFREG | 0o644, 0, 0, 0, None)
                .unwrap();
            meta.note_write(f.ino, 20_000 + rng.next() % 500_000, 0)
                .unwrap();
            created.push((d, name));
        }
        for _ in 0..5 {
            let d = dirs[(rng.next() % dirs.len() as u64) as usize];
            let i = rng.next() % per_dir;
            if let Ok(at) = meta.lookup(d, format!("report-{i:05}.xlsx").as_bytes()) {
                meta.note_write(at.ino, at.size + 100, swiftgate::meta::now_ns())
                    .unwrap();
            }
        }
        for _ in 0..2 {
            if created.len() > 4 {
                let j = (rng.next() % created.len() as u64) as usize;
                let (d, name) = created.swap_remove(j);
                let to = dirs[(rng.next() % dirs.len() as u64) as usize];
                let nn = format!("{name}.old");
                meta.rename(d, name.as_bytes(), to, nn.as_bytes(), false, false)
                    .unwrap();
                created.push((to, nn));
            }
        }
        for _ in 0..2 {
            if created.len() > 4 {
                let j = (rng.next() % created.len() as u64) as usize;
                let (d, name) = created.swap_remove(j);
                let u = meta.unlink(d, name.as_bytes()).unwrap();
                if u.nlink == 0 {
                    meta.purge_inode(u.ino, shipper.next_gen()).unwrap();
                }
            }
        }
        if Instant::now() >= next_ship {
            let t = Instant::now();
            shipper.ship(false).unwrap();
            ship_time += t.elapsed();
            intervals += 1;
            next_ship += Duration::from_secs(a.interval);
        }
        let spent = tick.elapsed();
        if spent < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1) - spent);
        }
    }
    shipper.ship(false).unwrap();
    intervals += 1;
    let st = shipper.stats();
    let secs = start.elapsed().as_secs_f64();
    let after = st.bytes - full.bytes;
    let per_hour_after = after as f64 * 3600.0 / secs;
    // The previous scheme: one full snapshot of the database per interval
    // with changes (this workload changes something every interval).
    let per_hour_before = full.bytes as f64 * 3600.0 / a.interval as f64;
    println!("files                     {}", a.files);
    println!("built in                  {:.0} s", built.as_secs_f64());
    println!("database                  {}", mib(db_size));
    println!(
        "full snapshot             {} stored in {:.2} s",
        mib(full.bytes),
        full_time.as_secs_f64()
    );
    println!(
        "workload                  {secs:.0} s, {} intervals of {} s, {} full snapshots after the first",
        intervals,
        a.interval,
        st.full_snapshots - full.full_snapshots
    );
    println!(
        "shipped by change         {} ({} segments), {:.1} ms per shipment",
        mib(after),
        st.segments - full.segments,
        ship_time.as_secs_f64() * 1000.0 / intervals.max(1) as f64
    );
    println!(
        "per hour: by change {} | a full snapshot per interval {} | ratio {:.0}x",
        mib(per_hour_after as u64),
        mib(per_hour_before as u64),
        per_hour_before / per_hour_after.max(1.0)
    );
    drop(shipper);
    drop(meta);
    if a.keep {
        println!(
            "kept: store local://{} cache {}",
            store_dir.display(),
            work.join("cache").display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
}
