// Migrations are embedded by `sqlx::migrate!`; rebuild when they change. The Spark Connect
// client is generated from Spark's .proto files (proto/spark/connect).
use std::path::PathBuf;

const SPARK_PROTOS: &[&str] = &[
    "base",
    "catalog",
    "commands",
    "common",
    "expressions",
    "ml",
    "ml_common",
    "pipelines",
    "relations",
    "types",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=migrations");
    let root = PathBuf::from("proto");
    let files: Vec<PathBuf> = SPARK_PROTOS
        .iter()
        .map(|f| root.join("spark/connect").join(format!("{f}.proto")))
        .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Arrow batches and other byte fields as `bytes::Bytes`: no copy out of the frame.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
