//! Compiles `proto/xcc/v1/*.proto` with the vendored protoc unless `PROTOC` names another one, so a
//! fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: set_var is unsafe only because another thread might read the environment at the
        // same time; this build script has no other threads.
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("xcc_v1_descriptor.bin"))
        .compile_protos(&["proto/xcc/v1/xcc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
