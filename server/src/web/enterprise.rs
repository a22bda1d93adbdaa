//! The enterprise's pages: home with its two modules, 维护站点及人员信息
//! (addresses, liaison officer, staff with search, paging, edit, move,
//! delete and CSV import) and 登记疫情防控信息 (today's records with the
//! computed numbers and the run time they are as of, past days).

use super::forms::{field_errors, form_values};
use super::render::pages;
use super::{Ctx, Shared, WebError};
use crate::domain::day_of;
use crate::{sites, staff};
use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

fn now_ms(app: &Shared) -> i64 {
    app.sys.clock.now().timestamp_millis()
}

fn status_of(errors: &BTreeMap<String, String>) -> StatusCode {
    if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

pub async fn home(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let today = day_of(app.sys.clock.now());
    let o = sites::overview(&app.sys.reader, id, &today).await?;
    let counts = crate::warnings::counts(&app.sys.reader, &ctx.warning_scope()?).await?;
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "home.html",
            context! { profile => o.profile, missing => o.base.missing, counts, today,
            records_today => o.records, addresses => o.base.addresses, unread => o.unread },
        )?
        .into_response())
}

async fn sites_page(
    app: &Shared,
    ctx: &Ctx,
    address_form: &sites::AddressForm,
    liaison_form: Option<&sites::LiaisonForm>,
    errors: &BTreeMap<String, String>,
    message: Option<String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let profile = sites::profile(&app.sys.reader, id).await?;
    let addresses = sites::addresses(&app.sys.reader, id).await?;
    let liaison = match liaison_form {
        Some(f) => f.clone(),
        None => sites::LiaisonForm {
            liaison_name: profile.liaison_name.clone().unwrap_or_default(),
            liaison_mobile: profile.liaison_mobile.clone().unwrap_or_default(),
        },
    };
    let districts = super::render::district_options(&app.sys.districts);
    let html = app.templates.page(
        app,
        ctx,
        "sites.html",
        context! { profile, addresses, address_form, liaison, errors, districts, message },
    )?;
    Ok((status_of(errors), html).into_response())
}

pub async fn sites(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    let (_, district) = ctx.enterprise()?;
    let form = sites::AddressForm {
        address: String::new(),
        district: district.to_string(),
    };
    sites_page(&app, &ctx, &form, None, &BTreeMap::new(), None).await
}

pub async fn add_address(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<sites::AddressForm>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    match sites::add_address(&app.sys.pool, &app.sys.districts, id, &f, now_ms(&app)).await {
        Ok(_) => Ok(Redirect::to("/sites").into_response()),
        Err(sites::Error::Invalid(errors)) => sites_page(&app, &ctx, &f, None, &errors, None).await,
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_address(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(address): Path<String>,
) -> Result<Response, WebError> {
    let (id, district) = ctx.enterprise()?;
    match sites::delete_address(&app.sys.pool, id, &address, now_ms(&app)).await {
        Ok(()) => Ok(Redirect::to("/sites").into_response()),
        Err(sites::Error::Refused(m)) => {
            let form = sites::AddressForm {
                address: String::new(),
                district: district.to_string(),
            };
            let mut errors = BTreeMap::new();
            errors.insert("delete".to_string(), m);
            sites_page(&app, &ctx, &form, None, &errors, None).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn set_liaison(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<sites::LiaisonForm>,
) -> Result<Response, WebError> {
    let (id, district) = ctx.enterprise()?;
    let address_form = sites::AddressForm {
        address: String::new(),
        district: district.to_string(),
    };
    match sites::set_liaison(&app.sys.pool, id, &f, now_ms(&app)).await {
        Ok(()) => {
            sites_page(
                &app,
                &ctx,
                &address_form,
                None,
                &BTreeMap::new(),
                Some("卫生联络官已保存".into()),
            )
            .await
        }
        Err(sites::Error::Invalid(errors)) => {
            sites_page(&app, &ctx, &address_form, Some(&f), &errors, None).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    q: String,
    address: String,
    page: i64,
}

async fn staff_list(
    app: &Shared,
    ctx: &Ctx,
    query: &ListQuery,
    form: &staff::PersonForm,
    errors: &BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let (staff, total) =
        staff::page(&app.sys.reader, id, &query.q, &query.address, query.page).await?;
    let addresses = sites::addresses(&app.sys.reader, id).await?;
    let html = app.templates.page(
        app,
        ctx,
        "staff.html",
        context! { staff, addresses, q => query.q, address => query.address,
        pages => pages(total, query.page), form, errors },
    )?;
    Ok((status_of(errors), html).into_response())
}

pub async fn staff(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    staff_list(
        &app,
        &ctx,
        &q,
        &staff::PersonForm::default(),
        &BTreeMap::new(),
    )
    .await
}

pub async fn add_person(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<staff::PersonForm>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    match staff::add(&app.sys.pool, id, &f, now_ms(&app)).await {
        Ok(_) => Ok(Redirect::to("/staff").into_response()),
        Err(staff::Error::Invalid(errors)) => {
            staff_list(&app, &ctx, &ListQuery::default(), &f, &errors).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn person_form(
    app: &Shared,
    ctx: &Ctx,
    person: &staff::Person,
    form: &staff::PersonForm,
    errors: &BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let addresses = sites::addresses(&app.sys.reader, id).await?;
    let html = app.templates.page(
        app,
        ctx,
        "person.html",
        context! { person, form, errors, addresses },
    )?;
    Ok((status_of(errors), html).into_response())
}

pub async fn person_page(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(person): Path<String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let p = staff::get(&app.sys.reader, id, &person).await?;
    let form = staff::PersonForm {
        name: p.name.clone(),
        id_number: String::new(),
        mobile: p.mobile.clone().unwrap_or_default(),
        address_id: p.address_id.clone(),
    };
    person_form(&app, &ctx, &p, &form, &BTreeMap::new()).await
}

pub async fn update_person(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(person): Path<String>,
    Form(f): Form<staff::PersonForm>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    match staff::update(&app.sys.pool, id, &person, &f, now_ms(&app)).await {
        Ok(()) => Ok(Redirect::to("/staff").into_response()),
        Err(staff::Error::Invalid(errors)) => {
            let p = staff::get(&app.sys.reader, id, &person).await?;
            person_form(&app, &ctx, &p, &f, &errors).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_person(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(person): Path<String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    staff::delete(&app.sys.pool, id, &person, now_ms(&app)).await?;
    Ok(Redirect::to("/staff").into_response())
}

/// Errors of a refused CSV import listed on the page; the others are only
/// counted ("以及另外 99,900 处错误"), so a bad 100,000-line file gives a
/// small page.
const IMPORT_ERRORS_SHOWN: usize = 100;

/// 99900 → "99,900".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub async fn import_page(State(app): State<Shared>, ctx: Ctx) -> Result<Response, WebError> {
    ctx.enterprise()?;
    Ok(app
        .templates
        .page(
            &app,
            &ctx,
            "import.html",
            context! { errors => Vec::<()>::new() },
        )?
        .into_response())
}

pub async fn import(
    State(app): State<Shared>,
    ctx: Ctx,
    mut multipart: Multipart,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let mut text = None;
    while let Some(field) = multipart.next_field().await.map_err(WebError::upload)? {
        if field.name() == Some("file") {
            let bytes = field.bytes().await.map_err(WebError::upload)?;
            // UTF-8 (BOM or not) or GBK, as Excel on Chinese Windows saves.
            let s = staff::decode_csv(&bytes).map_err(|e| WebError::BadRequest(e.to_string()))?;
            text = Some(s);
        }
    }
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Err(WebError::BadRequest("请选择要导入的CSV文件".into()));
    };
    let (errors, total, imported) =
        match staff::import_csv(&app.sys.pool, id, &text, now_ms(&app)).await {
            Ok(n) => (Vec::new(), 0, Some(n)),
            Err(staff::Error::Rows(rows)) => (
                // The page lists the first few; the rest are counted.
                rows.iter()
                    .take(IMPORT_ERRORS_SHOWN)
                    .map(|r| context! { line => r.line, message => r.message })
                    .collect(),
                rows.len(),
                None,
            ),
            Err(e) => return Err(e.into()),
        };
    let more = total.saturating_sub(errors.len());
    let more = (more > 0).then(|| thousands(more));
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let html = app.templates.page(
        &app,
        &ctx,
        "import.html",
        context! { errors, total, more, imported },
    )?;
    Ok((status, html).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecordsQuery {
    page: i64,
    address: String,
}

async fn records_page(
    app: &Shared,
    ctx: &Ctx,
    q: &RecordsQuery,
    values: &Value,
    errors: &BTreeMap<String, String>,
    existing: Option<String>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let today = day_of(app.sys.clock.now());
    let records = crate::records::of_day(&app.sys.reader, id, &today).await?;
    let addresses = sites::addresses(&app.sys.reader, id).await?;
    let missing = sites::base_data(&app.sys.reader, id).await?.missing;
    let (history, total) = crate::records::history(&app.sys.reader, id, &today, q.page).await?;
    let unfiled: Vec<_> = addresses
        .iter()
        .filter(|a| !records.iter().any(|r| r.address_id == a.id))
        .collect();
    let html = app.templates.page(
        app,
        ctx,
        "records.html",
        context! { today, records, unfiled, missing, history, pages => pages(total, q.page),
        form => &*app.sys.daily_record, values, errors, existing, selected => q.address },
    )?;
    Ok((status_of(errors), html).into_response())
}

pub async fn records(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<RecordsQuery>,
) -> Result<Response, WebError> {
    records_page(&app, &ctx, &q, &Value::Null, &BTreeMap::new(), None).await
}

pub async fn create_record(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let address = pairs
        .iter()
        .find(|(k, _)| k == "address_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let values = form_values(&app.sys.daily_record, &pairs);
    let q = RecordsQuery {
        page: 1,
        address: address.clone(),
    };
    let missing = sites::base_data(&app.sys.pool, id).await?.missing;
    if !missing.is_empty() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "address_id".into(),
            format!("请先完善基础信息：{}", missing.join("、")),
        );
        return records_page(&app, &ctx, &q, &values, &errors, None).await;
    }
    let today = day_of(app.sys.clock.now());
    match crate::records::create(
        &app.sys.pool,
        &app.sys.daily_record,
        id,
        &address,
        &today,
        &values,
        now_ms(&app),
    )
    .await
    {
        Ok(r) => Ok(Redirect::to(&format!("/records/{}", urlencoding::encode(&r))).into_response()),
        Err(crate::records::Error::Invalid(e)) => {
            records_page(&app, &ctx, &q, &values, &field_errors(&e), None).await
        }
        Err(e @ crate::records::Error::AlreadyFiled { .. }) => {
            let existing = match &e {
                crate::records::Error::AlreadyFiled { existing } => Some(existing.clone()),
                _ => None,
            };
            let mut errors = BTreeMap::new();
            errors.insert("address_id".into(), e.to_string());
            records_page(&app, &ctx, &q, &values, &errors, existing).await
        }
        Err(crate::records::Error::NotFound) => {
            let mut errors = BTreeMap::new();
            errors.insert("address_id".into(), "请选择本企业的办公地址".into());
            records_page(&app, &ctx, &q, &values, &errors, None).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn record_form(
    app: &Shared,
    ctx: &Ctx,
    record: &crate::records::Record,
    values: &Value,
    errors: &BTreeMap<String, String>,
    saved: bool,
) -> Result<Response, WebError> {
    let today = day_of(app.sys.clock.now());
    let html = app.templates.page(
        app,
        ctx,
        "record.html",
        context! { record, values, errors, saved, editable => record.day == today,
        form => &*app.sys.daily_record },
    )?;
    Ok((status_of(errors), html).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SavedQuery {
    saved: Option<u8>,
}

pub async fn record_page(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(record): Path<String>,
    Query(q): Query<SavedQuery>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let r = crate::records::get(&app.sys.reader, id, &record).await?;
    let values = r.fields.clone();
    record_form(&app, &ctx, &r, &values, &BTreeMap::new(), q.saved.is_some()).await
}

pub async fn update_record(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(record): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let (id, _) = ctx.enterprise()?;
    let values = form_values(&app.sys.daily_record, &pairs);
    let today = day_of(app.sys.clock.now());
    match crate::records::update(
        &app.sys.pool,
        &app.sys.daily_record,
        id,
        &record,
        &today,
        &values,
        now_ms(&app),
    )
    .await
    {
        Ok(()) => Ok(Redirect::to(&format!(
            "/records/{}?saved=1",
            urlencoding::encode(&record)
        ))
        .into_response()),
        Err(crate::records::Error::Invalid(e)) => {
            let r = crate::records::get(&app.sys.reader, id, &record).await?;
            record_form(&app, &ctx, &r, &values, &field_errors(&e), false).await
        }
        Err(e) => Err(e.into()),
    }
}
