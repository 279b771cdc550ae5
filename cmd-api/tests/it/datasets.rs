//! The datasets the api imports: listed with their schemas, and any other
//! name at `POST /import/{dataset}` refused with the list, nothing stored.

use etl_testkit::{TestEnv, get_json, import, post_import};

#[tokio::test]
async fn the_datasets_are_listed_with_their_schemas() {
    let env = TestEnv::new().await;
    let api = env.spawn_api(&[]).await;
    let (status, listing) = get_json(&api, "/datasets").await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        listing["datasets"],
        serde_json::json!([
            {"name": "companies", "title": "Company",
             "import": "/import/companies", "schema": "/datasets/companies/schema"},
            {"name": "employees", "title": "Employee",
             "import": "/import/employees", "schema": "/datasets/employees/schema"}])
    );
    let (status, schema) = get_json(&api, "/datasets/companies/schema").await;
    assert_eq!(status, 200);
    assert_eq!(schema["required"], serde_json::json!(["name", "inn"]));
    assert_eq!(schema["properties"]["inn"]["format"], "inn");
    let (status, schema) = get_json(&api, "/datasets/employees/schema").await;
    assert_eq!(status, 200);
    assert_eq!(schema["properties"]["snils"]["format"], "snils");

    let (status, answer) = get_json(&api, "/datasets/products/schema").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["code"], "unknown_dataset");
    assert_eq!(
        answer["error"]["datasets"],
        serde_json::json!(["companies", "employees"])
    );
}

#[tokio::test]
async fn an_unknown_dataset_or_a_path_trick_is_404_with_the_list_and_nothing_is_stored() {
    let env = TestEnv::new().await;
    let api = env.spawn_api(&[]).await;
    let company = etl_testkit::example("companies/c.json");
    for path in [
        "/import/products",
        "/import/Companies",
        "/import/..%2Fcompanies",
        "/import/companies%00",
    ] {
        let answer = etl_testkit::ImportRequest::new(&api, path, company.clone())
            .send()
            .await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "unknown_dataset", "{path}");
        assert_eq!(
            answer.body["error"]["datasets"],
            serde_json::json!(["companies", "employees"]),
            "{path}"
        );
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the api imports: companies, employees"),
            "{message}"
        );
    }
    // Dot segments the client resolves, and those it sends as they are.
    for path in [
        "/import/%2e%2e",
        "/import/../companies/x",
        "/import/.%2e/etc",
    ] {
        let answer = etl_testkit::ImportRequest::new(&api, path, company.clone())
            .send()
            .await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        let code = answer.body["error"]["code"].as_str().unwrap();
        assert!(
            ["unknown_dataset", "not_found"].contains(&code),
            "{path}: {code}"
        );
    }
    let stored = env.store(&[]).list("").await.unwrap();
    assert_eq!(stored, Vec::<String>::new(), "nothing stored");

    // The built-in dataset still imports, by its generic route.
    let (status, answer) = post_import(&api, company).await;
    assert_eq!(status, 202, "{answer}");
    let unknown = import(&api, "{}").send().await;
    assert_eq!(
        unknown.status, 422,
        "an empty company is the dataset's problem"
    );
}
