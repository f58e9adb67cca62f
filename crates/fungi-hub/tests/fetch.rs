//! `Hub::fetch` against a local HTTP server on 127.0.0.1 (no test touches the internet):
//! download into the cache, cache hits without requests, resume of a partial download, servers
//! without range support, interrupted transfers, checksums (torchvision's sha256 prefix, the
//! Hugging Face hub's X-Linked-Etag), HTTP errors and the offline error.

mod server;

use fungi_hub::{Entry, Error, Hub, Source};
use server::{Route, Server};
use sha2::{Digest, Sha256};

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 3 MiB of bytes that differ position by position (a misplaced range shows).
fn payload() -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn url_entry(file: &'static str, prefix: Option<String>) -> Entry {
    Entry {
        name: "test",
        source: Source::Url {
            url: Box::leak(format!("https://example.invalid/models/{file}").into_boxed_str()),
            sha256_prefix: prefix.map(|p| &*Box::leak(p.into_boxed_str())),
        },
        description: "test file",
    }
}

/// The files of `dir` other than lock files, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

fn hub(dir: &std::path::Path, server: &Server) -> Hub {
    Hub::new(dir)
        .with_mirror(Some(format!("{}/", server.base)))
        .with_progress(false)
}

fn ranged(body: Vec<u8>) -> Route {
    Route {
        body,
        ranges: true,
        ..Default::default()
    }
}

#[test]
fn downloads_checks_the_prefix_and_then_reads_the_cache() {
    let data = payload();
    let prefix = sha256(&data)[..8].to_string();
    let server = Server::start(vec![("/models/vit-x.pth", ranged(data.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let entry = url_entry("vit-x.pth", Some(prefix));
    assert_eq!(hub.cached(&entry), None);
    let path = hub.fetch(&entry).unwrap();
    assert_eq!(path, dir.path().join("checkpoints/vit-x.pth"));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(!dir.path().join("checkpoints/vit-x.pth.part").exists());
    assert_eq!(server.seen().len(), 1);
    // Cached: no request at all.
    assert_eq!(hub.fetch(&entry).unwrap(), path);
    assert_eq!(hub.cached(&entry), Some(path));
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn resumes_a_partial_download_with_a_range_request() {
    let data = payload();
    let server = Server::start(vec![("/models/a.pth", ranged(data.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("checkpoints/a.pth.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &data[..1_000_003]).unwrap();
    let entry = url_entry("a.pth", Some(sha256(&data)[..8].to_string()));
    let path = hub(dir.path(), &server).fetch(&entry).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/models/a.pth");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=1000003-"));
}

#[test]
fn a_complete_part_is_finished_after_416() {
    let data = payload();
    let server = Server::start(vec![("/models/b.pth", ranged(data.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("checkpoints/b.pth.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &data).unwrap();
    let path = hub(dir.path(), &server)
        .fetch(&url_entry("b.pth", None))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert!(!part.exists());
}

#[test]
fn a_server_without_ranges_replaces_the_part() {
    let data = payload();
    let server = Server::start(vec![(
        "/models/c.pth",
        Route {
            body: data.clone(),
            ..Default::default()
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("checkpoints/c.pth.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, vec![0xAB; 12_345]).unwrap();
    let path = hub(dir.path(), &server)
        .fetch(&url_entry("c.pth", None))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[test]
fn an_interrupted_download_keeps_its_part_and_the_next_run_resumes() {
    let data = payload();
    let server = Server::start(vec![(
        "/models/d.pth",
        Route {
            cut: Some(700_000),
            ..ranged(data.clone())
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let entry = url_entry("d.pth", Some(sha256(&data)[..8].to_string()));
    let err = hub.fetch(&entry).unwrap_err();
    assert!(
        matches!(err, Error::Interrupted { got: 700_000, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("700000 of 3145728 bytes") && msg.contains("resumes"),
        "{msg}"
    );
    let part = dir.path().join("checkpoints/d.pth.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 700_000);
    assert!(!dir.path().join("checkpoints/d.pth").exists());
    let path = hub.fetch(&entry).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=700000-"));
}

#[test]
fn a_checksum_mismatch_deletes_the_download() {
    let data = payload();
    let server = Server::start(vec![("/models/vit_b_16-c867db91.pth", ranged(data))]);
    let dir = tempfile::tempdir().unwrap();
    let entry = url_entry("vit_b_16-c867db91.pth", Some("c867db91".into()));
    let err = hub(dir.path(), &server).fetch(&entry).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(
        err.to_string().contains("expected sha256 c867db91"),
        "{err}"
    );
    assert_eq!(
        files(&dir.path().join("checkpoints")),
        Vec::<String>::new(),
        "nothing corrupt is kept"
    );
}

#[test]
fn http_errors_and_offline_errors_name_the_url_and_the_cache() {
    let server = Server::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let err = hub(dir.path(), &server)
        .fetch(&url_entry("missing.pth", None))
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("/models/missing.pth"), "{err}");

    let offline = Hub::new(dir.path())
        .with_mirror(Some(format!("http://127.0.0.1:{}", server::closed_port())))
        .with_progress(false);
    let entry = url_entry("e.pth", None);
    let err = offline.fetch(&entry).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    let msg = err.to_string();
    let cache = dir.path().join("checkpoints/e.pth");
    assert!(msg.contains(&cache.display().to_string()), "{msg}");
    assert!(
        msg.contains("offline") && msg.contains("FUNGI_MIRROR"),
        "{msg}"
    );
    // A file put at the cache path by hand is used without the network.
    std::fs::write(&cache, b"weights").unwrap();
    assert_eq!(offline.fetch(&entry).unwrap(), cache);
}

fn hf_entry() -> Entry {
    Entry {
        name: "tiny",
        source: Source::HuggingFace {
            repo: "timm/tiny_vit.test",
            file: "model.safetensors",
            revision: "main",
        },
        description: "test repo",
    }
}

fn hf_route(body: Vec<u8>, etag: &str) -> Route {
    Route {
        headers: vec![
            (
                "X-Repo-Commit".into(),
                "0123456789abcdef0123456789abcdef01234567".into(),
            ),
            ("X-Linked-Etag".into(), format!("\"{etag}\"")),
        ],
        ..ranged(body)
    }
}

const HF_PATH: &str = "/timm/tiny_vit.test/resolve/main/model.safetensors";

#[test]
fn hugging_face_files_are_verified_cached_and_resumed() {
    let data = payload();
    let server = Server::start(vec![(HF_PATH, hf_route(data.clone(), &sha256(&data)))]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let entry = hf_entry();
    let path = hub.fetch(&entry).unwrap();
    assert!(path.starts_with(dir.path().join("huggingface/models--timm--tiny_vit.test")));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let n = server.seen().len();
    assert_eq!(hub.fetch(&entry).unwrap(), path);
    assert_eq!(server.seen().len(), n, "a cached file needs no request");

    // Interrupted, then resumed from the hub client's own part file.
    let dir = tempfile::tempdir().unwrap();
    let hub = self::hub(dir.path(), &server);
    server.set(
        HF_PATH,
        Route {
            cut: Some(500_000),
            ..hf_route(data.clone(), &sha256(&data))
        },
    );
    let err = hub.fetch(&entry).unwrap_err();
    assert!(matches!(err, Error::HubInterrupted { .. }), "{err}");
    assert!(err.to_string().contains("next run resumes"), "{err}");
    assert!(hub.cached(&entry).is_none(), "{err}");
    let path = hub.fetch(&entry).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let last = server.seen().last().cloned().unwrap();
    assert_eq!(last.range.as_deref(), Some("bytes=500000-"));
}

#[test]
fn a_hugging_face_file_that_disagrees_with_its_etag_is_removed() {
    let data = payload();
    let wrong = sha256(b"other bytes");
    let server = Server::start(vec![(HF_PATH, hf_route(data, &wrong))]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let err = hub.fetch(&hf_entry()).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(err.to_string().contains(&wrong), "{err}");
    assert!(hub.cached(&hf_entry()).is_none());
}

#[test]
fn a_download_in_progress_elsewhere_is_refused_not_corrupted() {
    let data = payload();
    let server = Server::start(vec![("/models/f.pth", ranged(data))]);
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("checkpoints/f.pth.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let other = std::fs::File::create(&lock).unwrap();
    other.lock().unwrap();
    let err = hub(dir.path(), &server)
        .fetch(&url_entry("f.pth", None))
        .unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert!(server.seen().is_empty());
}

#[test]
fn a_range_answered_from_another_offset_restarts_the_download() {
    let data = payload();
    let server = Server::start(vec![(
        "/models/g.pth",
        Route {
            shift: 7,
            ..ranged(data.clone())
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("checkpoints/g.pth.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &data[..100_000]).unwrap();
    let path = hub(dir.path(), &server)
        .fetch(&url_entry("g.pth", None))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range, None, "the restart asks for the whole file");
}

#[test]
fn without_a_length_only_a_checksum_can_tell_a_complete_download() {
    let data = payload();
    let route = Route {
        no_length: true,
        body: data.clone(),
        ..Default::default()
    };
    let server = Server::start(vec![("/models/h.pth", route)]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let err = hub.fetch(&url_entry("h.pth", None)).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("no length"), "{err}");
    assert_eq!(files(&dir.path().join("checkpoints")), Vec::<String>::new());
    let entry = url_entry("h.pth", Some(sha256(&data)[..8].to_string()));
    assert_eq!(std::fs::read(hub.fetch(&entry).unwrap()).unwrap(), data);
}

#[test]
fn more_bytes_than_announced_are_refused_and_deleted() {
    let data = payload();
    let route = Route {
        no_length: true,
        extra: 1000,
        ..ranged(data.clone())
    };
    let server = Server::start(vec![("/models/i.pth", route)]);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("checkpoints/i.pth.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &data[..10]).unwrap();
    let err = hub(dir.path(), &server)
        .fetch(&url_entry("i.pth", None))
        .unwrap_err();
    assert!(
        err.to_string().contains("more than the 3145728 bytes"),
        "{err}"
    );
    assert_eq!(files(&dir.path().join("checkpoints")), Vec::<String>::new());
}

#[test]
fn malformed_hub_answers_are_errors_not_panics() {
    let data = payload();
    let server = Server::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let cases = [
        (
            Route {
                status: Some("302 Found".into()),
                ..Default::default()
            },
            "a redirect needs a Location",
        ),
        (
            Route {
                status: Some("300 Multiple Choices".into()),
                headers: vec![("Location".into(), "/elsewhere".into())],
                ..Default::default()
            },
            "unexpected HTTP 300",
        ),
        (
            hf_route(data.clone(), "../../../../etc/passwd"),
            "not a sha256",
        ),
        (
            Route {
                headers: vec![("X-Linked-Etag".into(), sha256(&data))],
                ..ranged(data.clone())
            },
            "X-Repo-Commit",
        ),
    ];
    for (route, want) in cases {
        server.set(HF_PATH, route);
        let err = hub.fetch(&hf_entry()).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    assert!(hub.cached(&hf_entry()).is_none());
}

#[test]
fn a_hub_mirror_that_ignores_ranges_on_resume_cannot_leave_a_corrupt_file() {
    let data = payload();
    let etag = sha256(&data);
    let server = Server::start(vec![(
        HF_PATH,
        Route {
            cut: Some(400_000),
            ..hf_route(data.clone(), &etag)
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let entry = hf_entry();
    assert!(matches!(
        hub.fetch(&entry),
        Err(Error::HubInterrupted { .. })
    ));
    // The resume asks for a range; this server sends the whole file, which the client appends.
    server.set(
        HF_PATH,
        Route {
            ranges: false,
            ignore_open_ranges: true,
            ..hf_route(data.clone(), &etag)
        },
    );
    let err = hub.fetch(&entry).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(hub.cached(&entry).is_none());
    // The next run downloads it afresh.
    server.set(HF_PATH, hf_route(data.clone(), &etag));
    assert_eq!(std::fs::read(hub.fetch(&entry).unwrap()).unwrap(), data);
}

#[test]
fn a_hub_file_not_verified_yet_is_checked_before_it_is_used() {
    let data = payload();
    let server = Server::start(vec![(HF_PATH, hf_route(data.clone(), &sha256(&data)))]);
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path(), &server);
    let entry = hf_entry();
    let path = hub.fetch(&entry).unwrap();
    // As if the run was killed after the download and before the check, with a bad blob.
    let blob = std::fs::canonicalize(&path).unwrap();
    let marker = blob.with_file_name(format!(
        "{}.verified",
        blob.file_name().unwrap().to_string_lossy()
    ));
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    std::fs::write(&blob, b"corrupt").unwrap();
    assert_eq!(hub.cached(&entry), None);
    assert!(!blob.exists(), "the bad blob is removed");
    assert_eq!(std::fs::read(hub.fetch(&entry).unwrap()).unwrap(), data);
}
