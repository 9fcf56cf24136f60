//! `strata`: topics, produce, consume, consumer groups, replay, performance tests and the
//! archive, against any Kafka-compatible broker.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
