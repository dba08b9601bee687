//! Run the cluster simulator and print one Markdown table row per scenario.
//!
//! cargo run --release -p banyan-topology --example sim -- \
//!     --nodes 10000 --viewers 1000000 [--seed 1] [--scenario all|steady|crashes|...]

use std::time::Instant;

use banyan_topology::sim::{run, Report, Scenario, SCENARIOS};

fn main() {
    let mut nodes = 200;
    let mut viewers = 20_000;
    let mut seed = 1;
    let mut which = "all".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--nodes" => nodes = value().parse().unwrap_or(nodes),
            "--viewers" => viewers = value().parse().unwrap_or(viewers),
            "--seed" => seed = value().parse().unwrap_or(seed),
            "--scenario" => which = value(),
            other => {
                eprintln!("unknown argument {other}; see the example's docs");
                std::process::exit(2);
            }
        }
    }
    let names: Vec<&str> = if which == "all" {
        SCENARIOS.to_vec()
    } else {
        vec![which.as_str()]
    };
    println!("{}", Report::header());
    for name in names {
        let Some(s) = Scenario::named(name, nodes, viewers, seed) else {
            eprintln!("unknown scenario {name}; known: {SCENARIOS:?}");
            std::process::exit(2);
        };
        let t = Instant::now();
        let r = run(&s);
        println!("{}", r.row());
        eprintln!(
            "{name}: {:.1} s wall; members {} tree {} over-fanout {} joins {} failed asks {} crashed {}",
            t.elapsed().as_secs_f64(),
            r.members_end,
            r.is_tree,
            r.over_fanout,
            r.joins,
            r.failed_asks,
            r.crashed
        );
    }
}
