//! End-to-end tests: the probe component (`fixtures/probe`) on a real `kefu-spin-host`
//! process, spoken to over HTTP. Each test starts its own host with its own state
//! directory; the host is stopped when the test ends, pass or fail.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{App, Host, Upstream, mqtt_wasm, probe_wasm, real_spin, run_to_exit, spin_up};

/// The probe's manifest, granting the key-value stores `stores` (a TOML array's items):
/// `upstream_port` is the only port outbound HTTP may reach.
fn probe_manifest(stores: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "probe"

[variables]
greeting = {{ default = "hello" }}
api_key = {{ required = true, secret = true }}
upstream_port = {{ default = "1" }}

[[trigger.http]]
route = "/..."
component = "probe"

[component.probe]
source = "{source}"
allowed_outbound_hosts = ["http://127.0.0.1:{{{{ upstream_port }}}}"]
key_value_stores = [{stores}]
sqlite_databases = ["default"]

[component.probe.variables]
greeting = "{{{{ greeting }}}}, world"
key = "{{{{ api_key }}}}"
"#,
        source = probe_wasm().display()
    )
}

fn start_probe(app: &App, label: &str, args: &[&str]) -> Host {
    let mut command = app.command();
    command
        .env("SPIN_VARIABLE_API_KEY", "key-from-env")
        .args(args);
    Host::start(command, label).expect("starting the host")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the client")
}

/// GET (or POST with `body`) and return status and text.
async fn call(host: &Host, path: &str, body: Option<&str>) -> (u16, String) {
    let client = client();
    let request = match body {
        Some(body) => client.post(host.url(path)).body(body.to_owned()),
        None => client.get(host.url(path)),
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", host.log()));
    let status = response.status().as_u16();
    (status, response.text().await.expect("reading the body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_resolve_like_spin() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "variables", &[]);
    assert_eq!(
        call(&host, "/var?name=greeting", None).await,
        (200, "hello, world".into()),
        "a component variable is a template over application variables and defaults"
    );
    assert_eq!(
        call(&host, "/var?name=key", None).await,
        (200, "key-from-env".into()),
        "SPIN_VARIABLE_API_KEY supplies `api_key`"
    );
    let (status, text) = call(&host, "/var?name=upstream_port", None).await;
    assert_eq!(status, 500);
    assert!(
        text.contains("Undefined"),
        "an application variable the component does not declare is undefined to it: {text}"
    );
    let (status, text) = call(&host, "/var?name=Not-Valid", None).await;
    assert_eq!(status, 500);
    assert!(text.contains("InvalidName"), "{text}");
    drop(host);

    // --variable beats the environment.
    let host = start_probe(
        &app,
        "variables-flag",
        &["--variable", "api_key=key-from-flag"],
    );
    assert_eq!(
        call(&host, "/var?name=key", None).await,
        (200, "key-from-flag".into())
    );
}

#[test]
fn a_required_variable_without_a_value_stops_startup() {
    let app = App::new(&probe_manifest(r#""default""#));
    let (status, stdout, stderr) = run_to_exit(app.command());
    assert!(!status.success());
    assert!(
        !stdout.contains("ready"),
        "it must not report ready: {stdout}"
    );
    assert!(
        stderr.contains("`api_key` is required") && stderr.contains("SPIN_VARIABLE_API_KEY"),
        "the error names the variable and where to set it: {stderr}"
    );
}

#[test]
fn an_import_the_host_does_not_provide_fails_at_startup_naming_it() {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "mqtt"
[[trigger.http]]
route = "/..."
component = "mqtt"
[component.mqtt]
source = "{}"
"#,
        mqtt_wasm().display()
    );
    let app = App::new(&manifest);
    let (status, stdout, stderr) = run_to_exit(app.command());
    assert!(!status.success());
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(
        stderr.contains("fermyon:spin/mqtt@2.0.0"),
        "the error must name the missing import: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_a_fresh_instance() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "fresh-instance", &[]);
    for _ in 0..3 {
        assert_eq!(
            call(&host, "/counter", None).await,
            (200, "1".into()),
            "a static counter in the guest must not survive between requests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_through_both_interfaces() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "key-value", &[]);

    // fermyon:spin/key-value@2.0.0
    assert_eq!(
        call(&host, "/kv?op=get&key=a", None).await,
        (404, "none".into())
    );
    assert_eq!(
        call(&host, "/kv?op=exists&key=a", None).await,
        (200, "false".into())
    );
    assert_eq!(call(&host, "/kv?op=set&key=a", Some("one")).await.0, 200);
    assert_eq!(call(&host, "/kv?op=set&key=b", Some("two")).await.0, 200);
    assert_eq!(
        call(&host, "/kv?op=get&key=a", None).await,
        (200, "one".into())
    );
    assert_eq!(
        call(&host, "/kv?op=exists&key=a", None).await,
        (200, "true".into())
    );
    assert_eq!(call(&host, "/kv?op=keys", None).await, (200, "a\nb".into()));
    assert_eq!(call(&host, "/kv?op=delete&key=a", None).await.0, 200);
    assert_eq!(
        call(&host, "/kv?op=delete&key=a", None).await.0,
        200,
        "deleting nothing is fine"
    );
    assert_eq!(call(&host, "/kv?op=keys", None).await, (200, "b".into()));

    // wasi:keyvalue sees the same store.
    assert_eq!(
        call(&host, "/wkv?op=get&key=b", None).await,
        (200, "two".into())
    );
    assert_eq!(call(&host, "/wkv?op=set&key=c", Some("three")).await.0, 200);
    assert_eq!(
        call(&host, "/kv?op=get&key=c", None).await,
        (200, "three".into())
    );
    assert_eq!(
        call(&host, "/wkv?op=exists&key=zz", None).await,
        (200, "false".into())
    );
    assert_eq!(
        call(&host, "/wkv?op=list", None).await,
        (200, "b\nc".into())
    );
    assert_eq!(call(&host, "/wkv?op=delete&key=c", None).await.0, 200);

    // wasi:keyvalue/batch
    assert_eq!(
        call(&host, "/wkv?op=batch-set", Some("x=1\ny=2")).await.0,
        200
    );
    assert_eq!(
        call(&host, "/wkv?op=batch-get&keys=x,nope,y", None).await,
        (200, "x=1\nnope missing\ny=2".into())
    );
    assert_eq!(
        call(&host, "/wkv?op=batch-delete&keys=x,y", None).await.0,
        200
    );
    assert_eq!(call(&host, "/wkv?op=list", None).await, (200, "b".into()));

    // Only labels the manifest grants may be opened.
    for path in ["/kv?op=open&store=other", "/wkv?op=open&store=other"] {
        let (status, text) = call(&host, path, None).await;
        assert_eq!(status, 500, "{path}");
        assert!(text.contains("AccessDenied"), "{path}: {text}");
    }

    // Data outlives the process, as Spin's .spin/ files do.
    let status = host.stop();
    assert!(status.success(), "SIGTERM stops the host cleanly: {status}");
    let host = start_probe(&app, "key-value-restart", &[]);
    assert_eq!(
        call(&host, "/kv?op=get&key=b", None).await,
        (200, "two".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_store_labels_are_separate_and_must_be_defined() {
    let app = App::new(&probe_manifest(r#""default", "cache""#));
    let mut command = app.command();
    command.env("SPIN_VARIABLE_API_KEY", "key-from-env");
    let (status, _, stderr) = run_to_exit(command);
    assert!(!status.success());
    assert!(
        stderr.contains("`cache`") && stderr.contains("--key-value-store"),
        "a granted label the host does not define stops startup, as in Spin: {stderr}"
    );

    let host = start_probe(&app, "labels", &["--key-value-store", "cache"]);
    assert_eq!(
        call(&host, "/kv?op=set&store=cache&key=k", Some("cached"))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&host, "/kv?op=get&store=cache&key=k", None).await,
        (200, "cached".into())
    );
    assert_eq!(
        call(&host, "/wkv?op=get&store=default&key=k", None).await,
        (404, "none".into()),
        "stores do not share keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_swap_has_exactly_one_winner_per_round() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "cas", &[]);
    for round in 0..5 {
        let start = format!("round-{round}");
        assert_eq!(
            call(&host, "/wkv?op=set&key=doc", Some(&start)).await.0,
            200
        );
        // Both read the value and wait for each other (a barrier counted in the store)
        // before they swap, so both swap against the value they read: one may succeed.
        let a = format!("/wkv?op=cas&key=doc&value=a{round}&barrier=doc-{round}&parties=2");
        let b = format!("/wkv?op=cas&key=doc&value=b{round}&barrier=doc-{round}&parties=2");
        let ((sa, ta), (sb, tb)) = tokio::join!(call(&host, &a, None), call(&host, &b, None));
        let (winner, loser_text) = match (sa, sb) {
            (200, 409) => (format!("a{round}"), tb),
            (409, 200) => (format!("b{round}"), ta),
            other => panic!(
                "round {round}: expected one winner and one cas-failed, got {other:?}: {ta} / {tb}"
            ),
        };
        assert!(
            loser_text.contains(&format!("saw {start}")),
            "round {round}: the loser read the same value as the winner: {loser_text}"
        );
        assert!(
            loser_text.ends_with(&format!("now {winner}")),
            "round {round}: the retry handle holds the winner's value: {loser_text}"
        );
        assert_eq!(
            call(&host, "/wkv?op=get&key=doc", None).await,
            (200, winner)
        );
    }

    // A CAS on an absent key only creates it if it is still absent.
    let first = call(&host, "/wkv?op=cas&key=fresh&value=first&barrier=f", None);
    let second = call(&host, "/wkv?op=cas&key=fresh&value=second&barrier=f", None);
    let ((s1, _), (s2, _)) = tokio::join!(first, second);
    let mut statuses = [s1, s2];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "exactly one may create the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increment_is_atomic_under_concurrency() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "increment", &[]);
    let calls = (0..20).map(|_| call(&host, "/wkv?op=incr&key=n&delta=1", None));
    let mut values: Vec<i64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, text)| {
            assert_eq!(status, 200, "{text}");
            text.parse().expect("a number")
        })
        .collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=20).collect::<Vec<i64>>(),
        "every increment saw a distinct value"
    );
    assert_eq!(
        call(&host, "/wkv?op=incr&key=n&delta=-25", None).await,
        (200, "-5".into())
    );
    assert_eq!(
        call(&host, "/wkv?op=set&key=word", Some("hello")).await.0,
        200
    );
    let (status, text) = call(&host, "/wkv?op=incr&key=word&delta=1", None).await;
    assert_eq!(
        status, 500,
        "a value increment did not write is an error: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_with_fts5_and_bm25() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "sqlite", &[]);
    let ok = |r: (u16, String)| {
        assert_eq!(r.0, 200, "{}", r.1);
        r.1
    };
    ok(call(
        &host,
        "/sql",
        Some("CREATE VIRTUAL TABLE kb USING fts5(title, body, tokenize = 'porter unicode61')"),
    )
    .await);
    for (title, body) in [
        (
            "Deploying",
            "deploy kefu with wrangler; deploying twice is safe; deploy",
        ),
        ("Billing", "invoices arrive monthly; deploy nothing"),
        ("Hours", "support answers during business hours"),
    ] {
        let path = format!(
            "/sql?p=t:{title}&p=t:{}",
            body.replace(' ', "+").replace(';', "%3B")
        );
        ok(call(
            &host,
            &path,
            Some("INSERT INTO kb (title, body) VALUES (?1, ?2)"),
        )
        .await);
    }
    let found = ok(call(
        &host,
        "/sql?p=t:deploy",
        Some("SELECT title, bm25(kb) AS score FROM kb WHERE kb MATCH ?1 ORDER BY score"),
    )
    .await);
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(lines[0], "title\tscore");
    assert!(
        lines[1].starts_with("t:Deploying\tr:-"),
        "best match first, scored by bm25: {found}"
    );
    assert!(lines[2].starts_with("t:Billing\tr:-"), "{found}");
    assert_eq!(lines.len(), 4, "two rows and the rowid line: {found}");

    // Every value type round-trips, and rowid/changes describe the last statement.
    ok(call(
        &host,
        "/sql",
        Some("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)"),
    )
    .await);
    let inserted = ok(call(
        &host,
        "/sql?p=i:-7&p=r:2.5&p=t:h%C3%A9llo&p=b:raw&p=n",
        Some("INSERT INTO t VALUES (?, ?, ?, ?, ?)"),
    )
    .await);
    assert!(inserted.ends_with("rowid=1 changes=1"), "{inserted}");
    let row = ok(call(&host, "/sql", Some("SELECT * FROM t")).await);
    assert_eq!(
        row.lines().nth(1),
        Some("i:-7\tr:2.5\tt:héllo\tb:raw\tnull"),
        "{row}"
    );

    // The older fermyon:spin/sqlite@2.0.0 reaches the same database.
    let v2 = ok(call(&host, "/sql2", Some("SELECT count(*) FROM kb")).await);
    assert_eq!(v2, "count(*)\nValue::Integer(3)");

    let (status, text) = call(&host, "/sql", Some("SELEC nonsense")).await;
    assert_eq!(status, 500);
    assert!(
        text.contains("Io") && text.contains("syntax error"),
        "{text}"
    );

    let (status, text) = call(&host, "/sql?db=other", Some("SELECT 1")).await;
    assert_eq!(status, 500);
    assert!(text.contains("AccessDenied"), "{text}");

    assert!(
        app.state_dir().join("sqlite_db.db").exists(),
        "the default database is sqlite_db.db in the state directory"
    );
}

/// `app` on this host and, where a Spin CLI is found, on real Spin: each runtime's name and
/// the command that starts it. Says so when `checked` could be checked on this host only.
fn this_host_and_real_spin(app: &App, checked: &str) -> Vec<(String, std::process::Command)> {
    let mut runtimes = vec![("kefu-spin-host".to_owned(), app.command())];
    if let Some(spin) = real_spin() {
        runtimes.push((
            format!("real Spin ({})", spin.display()),
            spin_up(&spin, app),
        ));
    } else {
        println!("no Spin CLI here: {checked} checked on this host only");
    }
    runtimes
}

/// A database refuses to `ATTACH` a file, as Spin's do unless a runtime configuration
/// allows it; a temporary or in-memory database may be attached. Held to real Spin where a
/// CLI is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_a_file_is_refused_as_on_spin() {
    let app = App::new(&probe_manifest(r#""default""#));
    for (n, (runtime, mut command)) in this_host_and_real_spin(&app, "ATTACH")
        .into_iter()
        .enumerate()
    {
        command.env("SPIN_VARIABLE_API_KEY", "k");
        let host = Host::start(command, &format!("attach-{n}")).expect("starting");
        // A path in the app's folder, so that a host that attached it leaves nothing behind.
        let elsewhere = app.manifest().with_file_name("elsewhere.db");
        let attach = format!("ATTACH '{}' AS elsewhere", elsewhere.display());
        let (status, text) = call(&host, "/sql", Some(&attach)).await;
        assert_eq!(status, 500, "{runtime}: {text}");
        assert!(text.contains("not authorized"), "{runtime}: {text}");
        for allowed in ["ATTACH ':memory:' AS scratch", "ATTACH '' AS temporary"] {
            let (status, text) = call(&host, "/sql", Some(allowed)).await;
            assert_eq!(status, 200, "{runtime}: {allowed}: {text}");
        }
        drop(host);
    }
}

/// Every `open` is a connection of its own, as on Spin. While one request holds a
/// transaction, another request's transaction waits for it (SQLite's busy timeout) instead
/// of failing to begin or running inside it, so a rollback takes back only its own writes;
/// and concurrent writers, each holding the write lock a while, all commit, in WAL mode as
/// Kefu's component sets it. Where a real Spin CLI is found, it is held to the same
/// outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_open_is_a_connection_of_its_own_as_on_spin() {
    let app = App::new(&probe_manifest(r#""default""#));
    let runtimes = this_host_and_real_spin(&app, "connections");
    // Both runtimes use the app's state directory: each starts from empty tables, and
    // counts in key-value counters of its own.
    for (n, (runtime, mut command)) in runtimes.into_iter().enumerate() {
        command.env("SPIN_VARIABLE_API_KEY", "k");
        let host = Host::start(command, &format!("connections-{n}")).expect("starting");
        let steps = |body: String| {
            let host = &host;
            async move { call(host, "/sql-steps", Some(&body)).await }
        };
        let ok = (200, String::new());
        assert_eq!(
            steps("CREATE TABLE IF NOT EXISTS t (v TEXT)\nDELETE FROM t".into()).await,
            ok,
            "{runtime}"
        );

        // The holder writes in a transaction, lets two writers start (one in a transaction
        // of its own, one a single statement), waits a little longer and rolls back.
        let holder = format!(
            "BEGIN IMMEDIATE\nINSERT INTO t VALUES ('rolled back')\nsignal begun-{n}\n\
             wait arrived-{n} 2\nsleep 300\nROLLBACK"
        );
        let in_transaction = format!(
            "wait begun-{n} 1\nsignal arrived-{n}\nBEGIN IMMEDIATE\n\
             INSERT INTO t VALUES ('committed')\nCOMMIT"
        );
        let alone =
            format!("wait begun-{n} 1\nsignal arrived-{n}\nINSERT INTO t VALUES ('autocommitted')");
        let (held, committed, autocommitted) =
            tokio::join!(steps(holder), steps(in_transaction), steps(alone));
        assert_eq!(held, ok, "{runtime}: the holder");
        assert_eq!(committed, ok, "{runtime}: the writer in a transaction");
        assert_eq!(autocommitted, ok, "{runtime}: the single statement");
        assert_eq!(
            steps("SELECT v FROM t ORDER BY v".into()).await,
            (
                200,
                "Value::Text(\"autocommitted\")\nValue::Text(\"committed\")".to_owned()
            ),
            "{runtime}: the rollback took back the holder's write only"
        );

        // Writers queue for the write lock, each holding it 100 ms: none fails.
        assert_eq!(
            steps("PRAGMA journal_mode=WAL\nDELETE FROM t".into()).await,
            ok,
            "{runtime}"
        );
        let writers = (0..8).map(|i| {
            steps(format!(
                "BEGIN IMMEDIATE\nINSERT INTO t VALUES ('w{i}')\nsleep 100\nCOMMIT"
            ))
        });
        for (i, outcome) in futures::future::join_all(writers)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(outcome, ok, "{runtime}: writer {i}");
        }
        assert_eq!(
            steps("SELECT count(*) FROM t".into()).await,
            (200, "Value::Integer(8)".to_owned()),
            "{runtime}"
        );
        drop(host);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_is_limited_to_allowed_hosts() {
    let allowed = Upstream::start();
    let forbidden = Upstream::start();
    let app = App::new(&probe_manifest(r#""default""#));
    let port = format!("upstream_port={}", allowed.port);
    let host = start_probe(&app, "outbound", &["--variable", &port]);

    let url = format!("/fetch?url=http://127.0.0.1:{}/hello", allowed.port);
    assert_eq!(
        call(&host, &url, None).await,
        (200, "status=200 body=upstream:/hello".into())
    );

    let url = format!("/fetch?url=http://127.0.0.1:{}/secret", forbidden.port);
    let (status, text) = call(&host, &url, None).await;
    assert_eq!(status, 502);
    assert!(
        text.contains("HttpRequestDenied"),
        "a host not granted gets HTTP-request-denied: {text}"
    );
    // A different scheme to the allowed host and port is not allowed either.
    let url = format!("/fetch?url=https://127.0.0.1:{}/tls", allowed.port);
    let (status, text) = call(&host, &url, None).await;
    assert_eq!(
        (status, text.contains("HttpRequestDenied")),
        (502, true),
        "{text}"
    );
    assert_eq!(
        forbidden.connections(),
        0,
        "the denied request never left the host"
    );
    assert_eq!(allowed.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_as_they_are_written() {
    let app = App::new(&probe_manifest(r#""default""#));
    let host = start_probe(&app, "sse", &[]);
    let started = Instant::now();
    let response = client()
        .get(host.url("/sse?n=3&gap_ms=500"))
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("reading a chunk")).unwrap());
        for i in 0..3 {
            if arrivals.len() == i && text.contains(&format!("data: event {i}\n\n")) {
                arrivals.push(started.elapsed());
            }
        }
    }
    assert_eq!(text, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
    assert_eq!(arrivals.len(), 3);
    // The guest writes event 2 a second after event 0: buffering would deliver them
    // together.
    assert!(
        arrivals[2] - arrivals[0] >= Duration::from_millis(800),
        "events arrived at {arrivals:?}: the body was buffered, not streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_component_and_spin_headers_describe_the_match() {
    let manifest =
        probe_manifest(r#""default""#).replace(r#"route = "/...""#, r#"route = "/api/...""#);
    let app = App::new(&manifest);
    let host = start_probe(&app, "routes", &[]);
    let (status, text) = call(&host, "/api/v1/spin-headers?q=1", None).await;
    assert_eq!(status, 200, "{text}");
    let headers: Vec<&str> = text.lines().collect();
    let port = host.url("").rsplit(':').next().unwrap().to_owned();
    for expected in [
        "spin-base-path: /".to_owned(),
        "spin-component-route: /api".to_owned(),
        format!("spin-full-url: http://127.0.0.1:{port}/api/v1/spin-headers?q=1"),
        "spin-matched-route: /api/...".to_owned(),
        "spin-path-info: /v1/spin-headers".to_owned(),
        "spin-raw-component-route: /api/...".to_owned(),
    ] {
        assert!(
            headers.contains(&expected.as_str()),
            "missing {expected:?} in {headers:?}"
        );
    }
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("spin-client-addr: 127.0.0.1:")),
        "{headers:?}"
    );
    let (status, _) = call(&host, "/apix/spin-headers", None).await;
    assert_eq!(
        status, 404,
        "a path outside every route reaches no component"
    );
}

/// Writes `files` (relative path, content) under the app's directory.
fn write_tree(app: &App, files: &[(&str, &str)]) {
    let dir = app
        .manifest()
        .parent()
        .expect("the app directory")
        .to_owned();
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Two components from the probe: `pages` at `/...` with two directories mounted, `api`
/// under `/api/...` and at the exact `/status`, with no files and another greeting.
fn two_component_manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "two"
[variables]
api_key = {{ required = true, secret = true }}

[[trigger.http]]
route = "/..."
component = "pages"
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = "/status"
component = "api"

[component.pages]
source = "{source}"
files = [{{ source = "site", destination = "/" }}, {{ source = "data", destination = "/srv/data" }}]
[component.pages.variables]
greeting = "from pages"

[component.api]
source = "{source}"
[component.api.variables]
greeting = "from api"
"#,
        source = probe_wasm().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_mounted_read_only_where_the_manifest_says() {
    let app = App::new(&two_component_manifest());
    write_tree(
        &app,
        &[
            ("site/hello.txt", "hello from the site"),
            ("site/sub/inner.txt", "inner"),
            ("data/table.csv", "a,b"),
            ("outside.txt", "not mounted"),
        ],
    );
    let host = start_probe(&app, "files", &[]);
    for (path, expected) in [
        ("/hello.txt", "hello from the site"),
        ("/sub/inner.txt", "inner"),
        ("/srv/data/table.csv", "a,b"),
    ] {
        assert_eq!(
            call(&host, &format!("/file?path={path}"), None).await,
            (200, expected.to_owned()),
            "{path}"
        );
    }
    // Nothing above the mount is reachable, however the path is written.
    for path in ["/../outside.txt", "/sub/../../outside.txt", "/outside.txt"] {
        let (status, text) = call(&host, &format!("/file?path={path}"), None).await;
        assert_eq!(status, 500, "{path}: {text}");
        assert!(!text.contains("not mounted"), "{path}: {text}");
    }
    // Read-only: neither a new file nor a changed one.
    for path in ["/new.txt", "/hello.txt", "/srv/data/new.csv"] {
        let (status, text) = call(&host, &format!("/write-file?path={path}"), Some("x")).await;
        assert_eq!(status, 500, "{path} was writable: {text}");
    }
    assert_eq!(
        call(&host, "/file?path=/hello.txt", None).await.1,
        "hello from the site"
    );
    let dir = app.manifest().parent().unwrap().to_owned();
    assert!(!dir.join("site/new.txt").exists());
    // A component without `files` sees no directory at all.
    let (status, text) = call(&host, "/api/file?path=/hello.txt", None).await;
    assert_eq!(status, 500, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_reaches_its_own_component() {
    let app = App::new(&two_component_manifest());
    write_tree(&app, &[("site/hello.txt", "hi"), ("data/x", "x")]);
    let host = start_probe(&app, "two-components", &[]);
    let greeting = |path: &str| {
        let path = path.to_owned();
        let host = &host;
        async move { call(host, &format!("{path}/var?name=greeting"), None).await }
    };
    // The most specific route wins: `/api/...` over `/...`, whatever their order.
    assert_eq!(greeting("").await, (200, "from pages".into()));
    assert_eq!(greeting("/api").await, (200, "from api".into()));
    assert_eq!(greeting("/apiary").await.1, "no route /apiary/var");
    let (status, text) = call(&host, "/status/spin-headers", None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("spin-matched-route: /..."),
        "/status is exact, so /status/… falls to the wildcard: {text}"
    );
    // The exact route: its path info is empty (under `/...` it would be `/status`).
    let (status, text) = call(&host, "/status", None).await;
    assert_eq!((status, text.as_str()), (404, "no route "));
    let (_, headers) = call(&host, "/api/spin-headers", None).await;
    assert!(
        headers.contains("spin-matched-route: /api/..."),
        "{headers}"
    );
}

#[test]
fn manifest_features_the_host_lacks_stop_startup() {
    let base = two_component_manifest();
    let files = r#"files = [{ source = "site", destination = "/" }, { source = "data", destination = "/srv/data" }]"#;
    assert!(base.contains(files));
    for (manifest, expected) in [
        (
            base.replace(files, r#"files = ["site/*.txt"]"#),
            "no glob patterns",
        ),
        (
            base.replace(
                files,
                r#"files = [{ source = "site/hello.txt", destination = "/hello.txt" }]"#,
            ),
            "is not a directory",
        ),
        (
            base.replace(
                files,
                r#"files = [{ source = "missing", destination = "/" }]"#,
            ),
            "is not a directory",
        ),
        (
            base.replace(
                files,
                r#"files = [{ source = "site", destination = "web" }]"#,
            ),
            "must be an absolute path",
        ),
        (
            base.replace(
                files,
                &format!("{files}\nexclude_files = [\"site/secret\"]"),
            ),
            "`exclude_files` is not supported",
        ),
        (
            base.replace(r#"route = "/status""#, r#"route = "/users/:id""#),
            "`:parameter` segments are not supported",
        ),
        (
            base.replace(
                r#"route = "/status""#,
                "route = \"/status\"\nexecutor = { type = \"wagi\" }",
            ),
            "`executor` is not supported",
        ),
    ] {
        let app = App::new(&manifest);
        write_tree(&app, &[("site/hello.txt", "hi"), ("data/x", "x")]);
        let mut command = app.command();
        command.env("SPIN_VARIABLE_API_KEY", "k");
        let (status, stdout, stderr) = run_to_exit(command);
        assert!(!status.success(), "{expected}: started anyway");
        assert!(!stdout.contains("ready"), "{stdout}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
}

/// A `files` mount whose source lies outside the manifest's folder stops startup, in Spin's
/// words: real Spin 4 refuses such a manifest ("… cannot be mapped because it is outside
/// the application directory"), so this host must not run one. An absolute source inside the
/// folder, or a relative one, is mounted. Where a real Spin CLI is found, it is held to the
/// same verdicts on the same manifests.
#[test]
fn a_files_mount_outside_the_application_directory_stops_startup_as_on_spin() {
    const REFUSAL: &str = "cannot be mapped because it is outside the application directory";
    let outside = tempfile::Builder::new()
        .prefix("kefu-spin-host-outside-")
        .tempdir()
        .unwrap();
    std::fs::write(outside.path().join("hello.txt"), "outside").unwrap();
    let base = two_component_manifest();
    let files = r#"files = [{ source = "site", destination = "/" }, { source = "data", destination = "/srv/data" }]"#;
    let with_site = |source: &str| {
        base.replace(
            files,
            &format!(r#"files = [{{ source = "{source}", destination = "/" }}]"#),
        )
    };
    let refused = with_site(&outside.path().display().to_string());
    let app = App::new(&refused);
    write_tree(&app, &[("site/hello.txt", "hi")]);
    let mut command = app.command();
    command.env("SPIN_VARIABLE_API_KEY", "k");
    let (status, stdout, stderr) = run_to_exit(command);
    assert!(!status.success(), "started anyway: {stdout}");
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(
        stderr.contains(REFUSAL) && stderr.contains("component `pages`"),
        "{stderr}"
    );

    // Inside the folder, written absolute: mounted.
    let accepted = App::new("");
    let inside = accepted.manifest().parent().unwrap().join("site");
    std::fs::write(
        accepted.manifest(),
        with_site(&inside.display().to_string()),
    )
    .unwrap();
    write_tree(&accepted, &[("site/hello.txt", "hi")]);
    let mut command = accepted.command();
    command.env("SPIN_VARIABLE_API_KEY", "k");
    let host = Host::start(command, "files-inside").expect("an inside mount runs");
    drop(host);

    let Some(spin) = real_spin() else {
        println!("no Spin CLI here: the refusal was checked on this host only");
        return;
    };
    let mut command = spin_up(&spin, &app);
    command.env("SPIN_VARIABLE_API_KEY", "k");
    let (status, stdout, stderr) = run_to_exit(command);
    assert!(
        !status.success() && (stderr.contains(REFUSAL) || stdout.contains(REFUSAL)),
        "real Spin ({}) did not refuse as this host does: {status}\n{stdout}\n{stderr}",
        spin.display()
    );
    let mut command = spin_up(&spin, &accepted);
    command.env("SPIN_VARIABLE_API_KEY", "k");
    let host =
        Host::start(command, "files-inside-real-spin").expect("real Spin runs the inside mount");
    drop(host);
}

/// An application whose `api` component reaches the private `callee` over service chaining.
fn chaining_manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "chain"
[variables]
api_key = {{ default = "k", secret = true }}

[[trigger.http]]
route = "/..."
component = "api"
[[trigger.http]]
route = {{ private = true }}
component = "callee"

[component.api]
source = "{source}"
allowed_outbound_hosts = ["http://*.spin.internal"]
[component.callee]
source = "{source}"
"#,
        source = probe_wasm().display()
    )
}

/// What a component that traps before answering gets its client: a plain `500` with an
/// empty body, served directly or through service chaining, and the host serves on; an
/// answer it completed before trapping stands. Real
/// Spin 4 answers exactly so (it logs the trap, and tells the client nothing of its kind),
/// so nothing tested here may rely on a trap's kind. Where a real Spin CLI is found, it is
/// held to the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_answers_a_plain_500_as_spin_does_and_a_finished_answer_stands() {
    let app = App::new(&chaining_manifest());
    let runtimes = this_host_and_real_spin(&app, "the trap's answer");
    for (n, (runtime, command)) in runtimes.into_iter().enumerate() {
        let host = Host::start(command, &format!("trap-{n}")).expect("starting");
        let response = client().get(host.url("/trap")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 500, "{runtime}");
        assert!(
            response.headers().get("content-type").is_none(),
            "{runtime}: {:?}",
            response.headers()
        );
        assert_eq!(response.text().await.unwrap(), "", "{runtime}");
        // Through service chaining: the caller gets the same plain 500 as a response.
        let (status, text) = call(&host, "/fetch?url=http://callee.spin.internal/trap", None).await;
        assert_eq!(
            (status, text.as_str()),
            (200, "status=500 body="),
            "{runtime}"
        );
        // A component that answered in full before it trapped: the answer stands, served
        // directly or through service chaining.
        assert_eq!(
            call(&host, "/answer-then-trap", None).await,
            (200, "answered".to_owned()),
            "{runtime}"
        );
        assert_eq!(
            call(
                &host,
                "/fetch?url=http://callee.spin.internal/answer-then-trap",
                None
            )
            .await,
            (200, "status=200 body=answered".to_owned()),
            "{runtime}"
        );
        // The host lives on.
        assert_eq!(
            call(&host, "/counter", None).await,
            (200, "1".to_owned()),
            "{runtime}"
        );
        drop(host);
    }
}
