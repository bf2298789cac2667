//! The draft's sources plans step by step: what each writes, under which key, and when it
//! refuses. `tests/knowledge.rs` runs the same plans on real SQLite FTS5.

use serde_json::json;

use super::*;
use crate::knowledge::{INSERT_CHUNK_SQL, INSERT_SOURCE_SQL, SqlValue, UNSTAGE_SQL};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn config() -> TenantConfig {
    TenantConfig::from_json(r#"{"knowledge": {"enabled": true}}"#).unwrap()
}

fn source(id: &str) -> Vec<u8> {
    json!({"id": id, "kind": "text", "body": "Parcels ship in two days."})
        .to_string()
        .into_bytes()
}

fn params_of(statements: &[Statement], sql: &str) -> Vec<Vec<SqlValue>> {
    statements
        .iter()
        .filter(|s| s.sql == sql)
        .map(|s| s.params.clone())
        .collect()
}

#[test]
fn a_staged_source_is_indexed_under_the_drafts_key_with_its_document() {
    let at = Timestamp::from_millis(7);
    let mut plan = DraftSourcesPlan::stage(
        at,
        tenant(),
        &config(),
        &BTreeMap::new(),
        "ship",
        &source("ship"),
    )
    .unwrap();
    let Need::Write(statements) = plan.step(Got::Start) else {
        panic!("one transaction")
    };
    let key = SqlValue::Text("acme:draft".into());
    assert_eq!(params_of(&statements, INSERT_SOURCE_SQL)[0][0], key);
    assert_eq!(params_of(&statements, INSERT_CHUNK_SQL)[0][0], key);
    // Every index row is under the draft's key; only the staged list names the tenant.
    assert!(
        statements
            .iter()
            .filter(|s| s.sql != knowledge::STAGE_SQL)
            .all(|s| s.params[0] == key)
    );
    let staged = params_of(&statements, knowledge::STAGE_SQL);
    assert_eq!(staged.len(), 1);
    let SqlValue::Text(document) = &staged[0][3] else {
        panic!("{staged:?}")
    };
    assert_eq!(
        Source::from_json(document).unwrap().body,
        "Parcels ship in two days."
    );
    assert_eq!(staged[0][2], SqlValue::Integer(0));
    assert_eq!(staged[0][4], SqlValue::Integer(7));
    assert!(matches!(plan.step(Got::Written(Ok(()))), Need::Done));
    let answer = plan.take_result().unwrap();
    assert_eq!(
        (answer["staged"].clone(), answer["chunks"].clone()),
        (json!("put"), json!(1))
    );
}

#[test]
fn a_removal_needs_a_live_source_and_a_drop_something_staged() {
    let stage = |body: &[u8]| {
        DraftSourcesPlan::stage(
            Timestamp::from_millis(1),
            tenant(),
            &config(),
            &BTreeMap::new(),
            "ship",
            body,
        )
    };
    let e = stage(br#"{"remove": true, "id": "ship"}"#).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        ("invalid_field", Some("remove"))
    );
    // Not live: refused before anything is written.
    let mut plan = stage(br#"{"remove": true}"#).unwrap();
    let Need::Rows(st) = plan.step(Got::Start) else {
        panic!()
    };
    assert_eq!(st.sql, LIVE_SOURCE_SQL);
    assert!(matches!(plan.step(Got::Rows(Ok(vec![]))), Need::Done));
    assert_eq!(plan.take_result().unwrap_err().code, "source_not_found");
    // Live: what was staged for it goes, and the removal is staged.
    let mut plan = stage(br#"{"remove": true}"#).unwrap();
    plan.step(Got::Start);
    let Need::Write(statements) = plan.step(Got::Rows(Ok(vec![json!({"source_id": "ship"})])))
    else {
        panic!()
    };
    let staged = params_of(&statements, knowledge::STAGE_SQL);
    assert_eq!(
        (staged[0][2].clone(), staged[0][3].clone()),
        (SqlValue::Integer(1), SqlValue::Null)
    );
    assert_eq!(params_of(&statements, UNSTAGE_SQL).len(), 1);

    let mut drop = DraftSourcesPlan::drop_staged(tenant(), "ship");
    let Need::Rows(st) = drop.step(Got::Start) else {
        panic!()
    };
    assert_eq!(st.sql, STAGED_ONE_SQL);
    drop.step(Got::Rows(Ok(vec![])));
    assert_eq!(
        drop.take_result().unwrap_err().code,
        "staged_source_not_found"
    );
}

#[test]
fn publishing_indexes_what_was_tested_live_in_one_transaction() {
    let document = String::from_utf8(source("ship")).unwrap();
    let tested = [("ship".to_owned(), 5), ("old".to_owned(), 5)]
        .into_iter()
        .collect();
    let mut plan = DraftSourcesPlan::publish(
        Timestamp::from_millis(9),
        tenant(),
        config(),
        BTreeMap::new(),
        Some(tested),
    );
    let Need::Rows(st) = plan.step(Got::Start) else {
        panic!()
    };
    assert_eq!(st.sql, knowledge::STAGED_SQL);
    let rows = vec![
        json!({"source_id": "late", "removal": 0, "document": document, "staged_at": 8}),
        json!({"source_id": "old", "removal": 1, "document": null, "staged_at": 5}),
        json!({"source_id": "ship", "removal": 0, "document": document, "staged_at": 5}),
    ];
    let Need::Write(statements) = plan.step(Got::Rows(Ok(rows))) else {
        panic!("one transaction")
    };
    // `ship` indexed under the live key, `old` removed, both unstaged; `late` (staged
    // after the suite ran) untouched.
    let live = SqlValue::Text("acme".into());
    assert_eq!(params_of(&statements, INSERT_SOURCE_SQL)[0][0], live);
    let unstaged: Vec<SqlValue> = params_of(&statements, UNSTAGE_SQL)
        .into_iter()
        .map(|p| p[1].clone())
        .collect();
    assert_eq!(
        unstaged,
        [SqlValue::Text("old".into()), SqlValue::Text("ship".into())]
    );
    assert!(
        statements
            .iter()
            .all(|s| !s.params.contains(&SqlValue::Text("late".into())))
    );
    assert!(matches!(plan.step(Got::Written(Ok(()))), Need::Done));
    let answer = plan.take_result().unwrap();
    assert_eq!(
        answer["sources"][0],
        json!({"id": "old", "change": "remove"})
    );
    assert_eq!(answer["sources"][1]["id"], "ship");
    assert_eq!(answer["sources"][1]["chunks"], 1);
}
