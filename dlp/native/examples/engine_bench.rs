//! `cargo run --release --example engine_bench -- TABLES.json TEXT_FILE [N]`: ns per `Engine::scan`.
use aegis_dlp_native::engine::{Engine, EngineTables};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tables: EngineTables = serde_json::from_str(&std::fs::read_to_string(&args[1]).unwrap()).unwrap();
    let text = std::fs::read_to_string(&args[2]).unwrap();
    let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(20000);
    let engine = Engine::new(&tables).unwrap();
    let (c, h) = engine.scan(&text);
    println!("{} bytes: {} candidates, {} hits", text.len(), c.len(), h.len());
    for _ in 0..n / 10 {
        std::hint::black_box(engine.scan(std::hint::black_box(&text)));
    }
    let mut best = f64::MAX;
    for _ in 0..40 {
        let t = std::time::Instant::now();
        for _ in 0..n / 40 {
            std::hint::black_box(engine.scan(std::hint::black_box(&text)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (n / 40) as f64);
    }
    println!("scan: {best:.0} ns (best of 40 rounds)");
}
