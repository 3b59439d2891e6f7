//! What the proxy keeps of the watched Services and EndpointSlices: the
//! [`Model`], kept up to date object by object, and which service ports changed
//! since the last sync. Pure.
//!
//! Each object is converted when it arrives ([`service_ports`],
//! [`slice_endpoints`]) and only its conversion is kept, never the object: at
//! 10,000 Services the API objects (even trimmed to the fields the proxy reads)
//! took 32 MiB, their conversions a fraction of it. The changed service ports
//! let a sync plan only those ([`super::plan::PlanState`]); kube-proxy's change
//! trackers do the same.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{
    namespaced, service_ports, slice_endpoints, Endpoint, Model, ServicePortName, Skip,
    SERVICE_NAME_LABEL,
};

/// Which watch an object came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
}

/// The Services and EndpointSlices the proxy knows, as a [`Model`].
#[derive(Debug, Default)]
pub struct ProxyInputs {
    model: Model,
    /// By Service (`namespace/name`): the service ports it contributes.
    services: HashMap<String, Vec<ServicePortName>>,
    /// By EndpointSlice (`namespace/name`).
    slices: HashMap<String, SliceEntry>,
    /// EndpointSlice names (without namespace) by their Service (`namespace/name`),
    /// sorted: the order in which slices win a duplicate address. (A sorted
    /// Vec: most Services have one slice, and a BTreeSet allocates a node of 11.)
    slices_by_service: HashMap<String, Vec<String>>,
    /// What each object had skipped, by kind (Services first) and `namespace/name`.
    skips: BTreeMap<(Kind, String), Vec<Skip>>,
    /// Service ports whose Service or endpoints changed since [`Self::take_changed`];
    /// `None`: anything may have (nothing taken yet).
    changed: Option<BTreeSet<ServicePortName>>,
    /// Objects seen by a relist in progress, per kind; those not seen go when it ends.
    relisting: [Option<HashSet<String>>; 2],
    /// Whether each watch has completed its first list.
    listed: [bool; 2],
}

#[derive(Debug, Default)]
struct SliceEntry {
    /// `namespace/service` of the label; `None` without one.
    service: Option<String>,
    endpoints: Vec<(ServicePortName, Endpoint)>,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Service => 0,
            Kind::EndpointSlice => 1,
        }
    }
}

impl ProxyInputs {
    /// All these objects at once (tests, benchmarks, [`Model::build`]).
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut inputs = Self::default();
        for svc in services {
            inputs.apply_service(svc);
        }
        for slice in slices {
            inputs.apply_slice(slice);
        }
        inputs.listed = [true, true];
        inputs
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, with every object's skips in it.
    pub fn into_model(self) -> Model {
        let skipped = self.skipped();
        Model {
            skipped,
            ..self.model
        }
    }

    /// What the objects had skipped: Services first, each kind by `namespace/name`.
    pub fn skipped(&self) -> Vec<Skip> {
        self.skips.values().flatten().cloned().collect()
    }

    /// The service ports changed since the last call; `None` the first time
    /// (everything is new). Afterwards the set starts empty again.
    pub fn take_changed(&mut self) -> Option<BTreeSet<ServicePortName>> {
        self.changed.replace(BTreeSet::new())
    }

    fn mark(&mut self, port: &ServicePortName) {
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(port.clone());
        }
    }

    /// Whether both watches have completed their first list.
    pub fn listed(&self) -> bool {
        self.listed == [true, true]
    }

    /// A (re)list of `kind` starts: objects it does not bring go at its end.
    pub fn relist_started(&mut self, kind: Kind) {
        self.relisting[kind.index()] = Some(HashSet::new());
    }

    /// The (re)list of `kind` is complete: objects it did not bring are deleted.
    pub fn relist_done(&mut self, kind: Kind) {
        self.listed[kind.index()] = true;
        let Some(seen) = self.relisting[kind.index()].take() else {
            return;
        };
        let known: Vec<&String> = match kind {
            Kind::Service => self.services.keys().collect(),
            Kind::EndpointSlice => self.slices.keys().collect(),
        };
        let gone: BTreeSet<String> = known
            .into_iter()
            .chain(
                self.skips
                    .keys()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, o)| o),
            )
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for object in gone {
            self.skips.remove(&(kind, object.clone()));
            match kind {
                Kind::Service => self.set_service(object, Vec::new()),
                Kind::EndpointSlice => self.set_slice(object, SliceEntry::default()),
            }
        }
    }

    fn seen(&mut self, kind: Kind, key: &str) {
        if let Some(seen) = self.relisting[kind.index()].as_mut() {
            seen.insert(key.to_string());
        }
    }

    fn set_skips(&mut self, kind: Kind, key: &str, skips: Vec<Skip>) {
        if skips.is_empty() {
            self.skips.remove(&(kind, key.to_string()));
        } else {
            self.skips.insert((kind, key.to_string()), skips);
        }
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, svc: &Service) {
        let key = namespaced(&svc.metadata);
        self.seen(Kind::Service, &key);
        let (ports, skips) = service_ports(svc);
        self.set_skips(Kind::Service, &key, skips);
        let mut names = Vec::with_capacity(ports.len());
        for port in ports {
            names.push(port.name.clone());
            if self.model.services.get(&port.name) != Some(&port) {
                self.mark(&port.name);
                self.model.services.insert(port.name.clone(), port);
            }
        }
        self.set_service(key, names);
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let key = namespaced(&svc.metadata);
        self.set_skips(Kind::Service, &key, Vec::new());
        self.set_service(key, Vec::new());
    }

    /// Sets the service ports of a Service (already in the model); the ports it
    /// had and no longer has leave the model.
    fn set_service(&mut self, key: String, ports: Vec<ServicePortName>) {
        let old = self.services.remove(&key);
        for name in old.into_iter().flatten() {
            if !ports.contains(&name) && self.model.services.remove(&name).is_some() {
                self.mark(&name);
            }
        }
        if !ports.is_empty() {
            self.services.insert(key, ports);
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let key = namespaced(&slice.metadata);
        self.seen(Kind::EndpointSlice, &key);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|s| {
                format!(
                    "{}/{s}",
                    slice.metadata.namespace.as_deref().unwrap_or_default()
                )
            });
        let (endpoints, skips) = slice_endpoints(slice);
        self.set_skips(Kind::EndpointSlice, &key, skips);
        self.set_slice(key, SliceEntry { service, endpoints });
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let key = namespaced(&slice.metadata);
        self.set_skips(Kind::EndpointSlice, &key, Vec::new());
        self.set_slice(key, SliceEntry::default());
    }

    /// Replaces (or, empty, deletes) an EndpointSlice's entry and merges the
    /// endpoints of every service port it contributed to before or now.
    fn set_slice(&mut self, key: String, entry: SliceEntry) {
        let slice_name = key
            .split_once('/')
            .map_or(key.as_str(), |(_, n)| n)
            .to_string();
        let mut ports: BTreeSet<ServicePortName> =
            entry.endpoints.iter().map(|(n, _)| n.clone()).collect();
        let service = entry.service.clone();
        if let Some(service) = &service {
            let names = self.slices_by_service.entry(service.clone()).or_default();
            if let Err(at) = names.binary_search(&slice_name) {
                names.insert(at, slice_name.clone());
            }
        }
        let old = if service.is_some() || !entry.endpoints.is_empty() {
            self.slices.insert(key, entry)
        } else {
            self.slices.remove(&key)
        };
        if let Some(old) = old {
            if let Some(before) = old.service.filter(|s| service.as_ref() != Some(s)) {
                if let Some(names) = self.slices_by_service.get_mut(&before) {
                    names.retain(|n| *n != slice_name);
                    if names.is_empty() {
                        self.slices_by_service.remove(&before);
                    }
                }
            }
            ports.extend(old.endpoints.into_iter().map(|(n, _)| n));
        }
        for port in ports {
            let merged = self.merged_endpoints(&port);
            if self
                .model
                .endpoints
                .get(&port)
                .map_or(&[][..], Vec::as_slice)
                != merged
            {
                self.mark(&port);
                if merged.is_empty() {
                    self.model.endpoints.remove(&port);
                } else {
                    self.model.endpoints.insert(port, merged);
                }
            }
        }
    }

    /// One service port's endpoints from all its Service's slices: sorted by
    /// address, an address in two slices taken from the slice first by name.
    fn merged_endpoints(&self, port: &ServicePortName) -> Vec<Endpoint> {
        let service = format!("{}/{}", port.namespace, port.name);
        let mut merged: Vec<Endpoint> = Vec::new();
        for slice_name in self.slices_by_service.get(&service).into_iter().flatten() {
            let Some(entry) = self.slices.get(&format!("{}/{slice_name}", port.namespace)) else {
                continue;
            };
            for (_, ep) in entry.endpoints.iter().filter(|(n, _)| n == port) {
                if !merged.iter().any(|e| e.ip == ep.ip && e.port == ep.port) {
                    merged.push(ep.clone());
                }
            }
        }
        merged.sort_by_key(|e| (e.ip, e.port));
        merged
    }
}

// === impl Model ===

impl Model {
    /// Builds the model from all these Services and EndpointSlices at once
    /// (the proxy loop keeps it up to date object by object in a
    /// [`ProxyInputs`], which this uses).
    pub fn build<S, E>(
        services: impl IntoIterator<Item = S>,
        slices: impl IntoIterator<Item = E>,
    ) -> Self
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let services: Vec<S> = services.into_iter().collect();
        let slices: Vec<E> = slices.into_iter().collect();
        ProxyInputs::from_objects(
            services.iter().map(Borrow::borrow),
            slices.iter().map(Borrow::borrow),
        )
        .into_model()
    }
}

#[cfg(test)]
mod tests;
