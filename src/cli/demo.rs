//! `wukong demo`: the whole pipeline on the embedded simulated cluster, with no cluster and no
//! set-up. It applies a first revision of a fleet (creating every VM), then a second revision
//! (a set scaled out, CPU and memory hot-plugged, disks grown, a NIC hot-plugged, VMs suspended
//! and resumed), showing each plan, the progress and the report, and ends with the VMs' state.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::apply::{ReportFormat, Source, apply_source};
use super::progress::Screen;
use super::term::{errln, outln, outp};
use super::{EXIT_ERROR, EXIT_OK, Error, load_and_render};
use crate::apply::{Cluster, Options, Report};
use crate::live::{self, str_at};
use crate::sim::{self, Server};

/// The arguments of `wukong demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The fleets to apply, one revision after the other.
    #[arg(default_values = ["examples/fleet", "examples/fleet-next"])]
    pub revisions: Vec<PathBuf>,
    /// Run the simulated KubeVirt controllers this many times faster than real time.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
}

pub fn run(a: DemoArgs) -> Result<u8, Error> {
    let mut fleets = Vec::new();
    for (i, path) in a.revisions.iter().enumerate() {
        let revision = format!("r{}", i + 1);
        let (fleet, objects) = load_and_render(path, &revision)?;
        fleets.push((path.clone(), fleet, objects, revision));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let config = sim::Config {
            speed: a.speed,
            ..sim::Config::default()
        };
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::start_with(loopback, config).await?;
        errln!(
            "Started the embedded simulated KubeVirt cluster at {} ({}× real time).",
            server.url(),
            a.speed
        );
        let client = kube::Client::try_from(kube::Config::new(
            server
                .url()
                .parse()
                .map_err(|_| Error::Demo("the simulator's URL".into()))?,
        ))
        .map_err(|e| Error::Demo(e.to_string()))?;
        let cluster = Cluster::new(client.clone());
        let mut all_ok = true;
        for (n, (path, fleet, objects, revision)) in fleets.into_iter().enumerate() {
            prepare(&client, &fleet, &objects).await?;
            outln!(
                "\n══ Revision {} of {}: {} ══\n",
                n + 1,
                a.revisions.len(),
                path.display()
            );
            let source = Source::Fleet {
                fleet: Box::new(fleet),
                objects,
                revision,
            };
            let reports = apply_source(
                &cluster,
                &source,
                &Options::default(),
                ReportFormat::Text,
                true,
                &Screen::new(),
            )
            .await?;
            all_ok &= reports.last().is_none_or(Report::succeeded);
        }
        outln!("\n══ The VMs now ══\n");
        outp!("{}", vm_table(&client).await?);
        server.shutdown().await?;
        Ok(if all_ok { EXIT_OK } else { EXIT_ERROR })
    })
}

/// What a real cluster would already have: the fleet's namespaces, its default storage class
/// (expandable) and the network attachments its VMs name with `nadName`. Said out loud, since
/// Wukong itself creates none of them (and plans a VM that needs a missing one as blocked).
async fn prepare(
    client: &kube::Client,
    fleet: &crate::fleet::Fleet,
    objects: &[crate::render::Rendered],
) -> Result<(), Error> {
    let namespaces: BTreeSet<&str> = objects.iter().map(|o| o.id.namespace.as_str()).collect();
    let mut made = Vec::new();
    let ns_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")),
    );
    for ns in namespaces {
        if create(
            &ns_api,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?
        {
            made.push(format!("namespace {ns}"));
        }
    }
    if let Some(sc) = &fleet.settings.default_storage_class {
        let sc_api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "storage.k8s.io",
                "v1",
                "StorageClass",
            )),
        );
        let class = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": sc},
            "provisioner": "csi.sim.wukong.novasphere.dev",
            "allowVolumeExpansion": true,
        });
        if create(&sc_api, class).await? {
            made.push(format!("storage class {sc} (expandable)"));
        }
    }
    let nad_api = |ns: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
                "network-attachment-definitions",
            ),
        )
    };
    let existing: BTreeSet<(String, String)> = fleet
        .vms
        .values()
        .flat_map(|vm| {
            vm.spec.networks.iter().filter_map(|n| match &n.attachment {
                crate::fleet::Attachment::Existing(name) => {
                    let (ns, name) = name.split_once('/').unwrap_or((&vm.namespace, name));
                    Some((ns.to_owned(), name.to_owned()))
                }
                _ => None,
            })
        })
        .collect();
    for (ns, name) in existing {
        let config =
            json!({"cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": "br0"});
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": config.to_string()},
        });
        if create(&nad_api(&ns), nad).await? {
            made.push(format!("network attachment {ns}/{name}"));
        }
    }
    if !made.is_empty() {
        errln!(
            "Prepared the cluster as an administrator would: {}.",
            made.join(", ")
        );
    }
    Ok(())
}

/// Create an object unless it exists; whether it was created.
async fn create(api: &Api<DynamicObject>, object: Value) -> Result<bool, Error> {
    let object: DynamicObject =
        serde_json::from_value(object).map_err(|e| Error::Demo(e.to_string()))?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::Demo(e.to_string())),
    }
}

/// One line per VM: status, vCPUs, memory, interfaces, disks (as the running instance has them).
async fn vm_table(client: &kube::Client) -> Result<String, Error> {
    let live = live::read::read(client, &live::read::Scope::All).await?;
    let mut out = format!(
        "{:<24} {:<9} {:>5} {:>7}  {:<28} {}\n",
        "VM", "STATUS", "VCPUS", "MEMORY", "INTERFACES", "DISKS"
    );
    for (id, vm) in live
        .objects
        .iter()
        .filter(|(id, _)| id.kind == crate::identity::Kind::VirtualMachine)
    {
        let vmi = live.vmi(&id.namespace, &id.name);
        let status = str_at(vm, &["status", "printableStatus"]).unwrap_or("-");
        let (vcpus, memory, nics) = match vmi {
            Some(i) => {
                let t = i.pointer("/status/currentCPUTopology");
                let n = |k: &str| {
                    t.and_then(|t| t.get(k))
                        .and_then(Value::as_u64)
                        .unwrap_or(1)
                };
                let nics: Vec<&str> = i
                    .pointer("/status/interfaces")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|x| str_at(x, &["name"])).collect())
                    .unwrap_or_default();
                (
                    (n("sockets") * n("cores") * n("threads")).to_string(),
                    str_at(i, &["status", "memory", "guestRequested"])
                        .unwrap_or("-")
                        .to_owned(),
                    nics.join(","),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let disks: Vec<String> = vm
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .map(|vols| {
                vols.iter()
                    .filter_map(|v| str_at(v, &["dataVolume", "name"]))
                    .map(|claim| {
                        // The disk's size: its PVC less CDI's filesystem overhead.
                        let size = live
                            .pvc(&id.namespace, claim)
                            .and_then(|p| {
                                let created = live
                                    .data_volume(&id.namespace, claim)
                                    .and_then(crate::plan::volumes::created_size);
                                crate::plan::volumes::current_size(p, created, vmi)
                            })
                            .map_or_else(|| "-".to_owned(), |q| q.to_string());
                        format!("{claim}={size}")
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<24} {:<9} {:>5} {:>7}  {:<28} {}\n",
            format!("{}/{}", id.namespace, id.name),
            status,
            vcpus,
            memory,
            nics,
            disks.join(" ")
        ));
    }
    Ok(out)
}
