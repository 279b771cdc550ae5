#!/usr/bin/env python3
"""Project checks of everything under deployments/ and the Dockerfiles, for
what schema validation cannot know: that the settings the manifests pass
exist, that probes and ports point at what the services really serve, that
no image floats on `latest`, that secrets are only referenced.

  deploy_check.py ROOT COMPOSE_DEV.yaml COMPOSE_TEST.yaml K8S_DEV.yaml K8S_PROD.yaml

The compose files are `docker-compose config` output (anchors, overrides and
variables resolved), the Kubernetes files the rendered overlays. With
--self-test it breaks a copy of each input in the ways the checks exist for
and fails unless every breakage is reported. Exit 1 with one line per
problem.
"""

import copy
import json
import re
import sys
from pathlib import Path

import yaml

SERVICES = {  # service -> (listen setting, default port)
    "api": ("API_LISTEN_ADDR", 8080),
    "processor": ("PROCESSOR_LISTEN_ADDR", 8081),
    "monitoring": ("MONITORING_LISTEN_ADDR", 8082),
}
ROUTES = {"/liveness", "/readiness", "/metrics"}
# Never a literal value in a manifest.
SECRET_SETTINGS = {"DATABASE_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "API_KEYS"}
# Read by the tracing subscriber rather than our config code.
EXTRA_SETTINGS = {"RUST_LOG"}


def known_settings(root):
    names = set(EXTRA_SETTINGS)
    for line in (root / ".env.example").read_text().splitlines():
        m = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def image_problem(image):
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if not tag:
        return f"image {image} has no tag"
    if tag == "latest":
        return f"image {image} uses `latest`"
    return None


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


# --- compose ----------------------------------------------------------------

def check_compose(label, config, settings, dashboard, prometheus, provisioning):
    problems = []
    services = config["services"]
    for name, svc in services.items():
        if "image" not in svc:
            problems.append(f"{label}: {name} has no image")
        elif (p := image_problem(svc["image"])):
            problems.append(f"{label}: {name}: {p}")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep not in services:
                problems.append(f"{label}: {name} depends on unknown service {dep}")
                continue
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{label}: {name} waits for {dep} to be healthy, which has no healthcheck")
            if condition == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(f"{label}: {name} waits for {dep} to complete, which restarts")
    for name in list(SERVICES) + ["migrate"]:
        svc = services.get(name)
        if svc is None:
            problems.append(f"{label}: no {name} service")
            continue
        env = svc.get("environment") or {}
        for var in env:
            if var not in settings:
                problems.append(f"{label}: {name} sets {var}, which no service reads (.env.example)")
        if name in SERVICES:
            listen_var, default = SERVICES[name]
            port = port_of(env.get(listen_var, f":{default}"))
            targets = [int(p["target"]) for p in svc.get("ports", [])]
            if port not in targets:
                problems.append(f"{label}: {name} listens on {port} but publishes {targets}")
        brokers = env.get("KAFKA_BROKERS", "")
        kafka = sorted(s for s in services if s.startswith("kafka-"))
        for broker in kafka:
            if f"{broker}:9092" not in brokers:
                problems.append(f"{label}: {name}'s KAFKA_BROKERS misses {broker}")
    kafka = {n: s for n, s in services.items() if n.startswith("kafka-")}
    if len(kafka) != 3:
        problems.append(f"{label}: {len(kafka)} Kafka brokers, the design asks for 3")
    for name, svc in kafka.items():
        env = svc.get("environment") or {}
        want = {"KAFKA_DEFAULT_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
                "KAFKA_NUM_PARTITIONS": "3", "KAFKA_PROCESS_ROLES": "broker,controller"}
        for key, value in want.items():
            if str(env.get(key)) != value:
                problems.append(f"{label}: {name} {key}={env.get(key)}, want {value}")
    # Prometheus scrapes every service where it listens.
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name, (listen_var, default) in SERVICES.items():
        env = services.get(name, {}).get("environment") or {}
        want = f"{name}:{port_of(env.get(listen_var, f':{default}'))}"
        if want not in targets:
            problems.append(f"{label}: Prometheus does not scrape {want}")
    # Traces: every service sends its spans to the stack's OTLP backend,
    # and the monitor links a file to its trace there.
    if "jaeger" not in services:
        problems.append(f"{label}: no trace backend (a jaeger service)")
    for name in SERVICES:
        env = services.get(name, {}).get("environment") or {}
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://jaeger:4318":
            problems.append(f"{label}: {name} does not send its spans to jaeger:4318 (OTEL_EXPORTER_OTLP_ENDPOINT)")
    ui = (services.get("monitoring", {}).get("environment") or {}).get("TRACES_UI_URL", "")
    if "{trace_id}" not in ui:
        problems.append(f"{label}: monitoring has no TRACES_UI_URL with {{trace_id}} in it")
    # Grafana: the provisioned datasource is the one the dashboard names,
    # and the dashboards folder is mounted where the provider looks.
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    provided = {d["uid"] for d in provisioning["datasources"]["datasources"]}
    if not uids <= provided:
        problems.append(f"{label}: dashboard datasources {uids - provided} are not provisioned")
    path = provisioning["dashboards"]["providers"][0]["options"]["path"]
    mounts = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}"
              for v in services.get("grafana", {}).get("volumes", [])]
    if not any(m.split(":")[1] == path and "grafana/dashboards" in m.split(":")[0] for m in mounts if ":" in m):
        problems.append(f"{label}: grafana does not mount the dashboards at {path}")
    return problems


def check_stack_env(label, compose_text, env_example_text):
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    listed = {m.group(1) for line in env_example_text.splitlines()
              if (m := re.match(r"([A-Z][A-Z0-9_]*)=", line))}
    problems = [f"{label}: ${{{v}}} is used but not in its .env.example" for v in sorted(used - listed)]
    problems += [f"{label}: .env.example lists {v}, which the compose file does not use" for v in sorted(listed - used)]
    return problems


# --- kubernetes -------------------------------------------------------------

def check_k8s(label, objects, settings):
    problems = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    config = {}
    for cm in by_kind.get("ConfigMap", {}).values():
        for key, value in (cm.get("data") or {}).items():
            config[key] = value
            if key not in settings:
                problems.append(f"{label}: ConfigMap {cm['metadata']['name']} sets {key}, which no service reads")
            if key in SECRET_SETTINGS:
                problems.append(f"{label}: {key} is in a ConfigMap; it belongs in a Secret")
    if by_kind.get("Secret"):
        problems.append(f"{label}: a Secret is written in the manifests; reference one instead")
    if "OTEL_EXPORTER_OTLP_ENDPOINT" not in config:
        problems.append(f"{label}: the ConfigMap does not say where spans go (OTEL_EXPORTER_OTLP_ENDPOINT)")
    workloads = list(by_kind.get("Deployment", {}).values()) + list(by_kind.get("Job", {}).values())
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            problems.append(f"{label}: {name} may run as root (runAsNonRoot)")
        for c in pod["containers"]:
            where = f"{label}: {name}/{c['name']}"
            if (p := image_problem(c["image"])):
                problems.append(f"{where}: {p}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problems.append(f"{where}: no {part}.{r}")
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            env = {}
            for e in c.get("env") or []:
                if e["name"] not in settings:
                    problems.append(f"{where}: sets {e['name']}, which no service reads")
                if e["name"] in SECRET_SETTINGS and "value" in e:
                    problems.append(f"{where}: {e['name']} is a literal; reference a Secret")
                env[e["name"]] = e.get("value")
            if w["kind"] != "Deployment":
                continue
            listen_var, default = SERVICES.get(name, (None, None))
            if listen_var is None:
                problems.append(f"{where}: not one of the services {sorted(SERVICES)}")
                continue
            port = port_of(env.get(listen_var) or f":{default}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            if port not in ports.values():
                problems.append(f"{where}: listens on {port} but declares ports {sorted(ports.values())}")
            for probe in ("livenessProbe", "readinessProbe"):
                http = ((c.get(probe) or {}).get("httpGet")) or {}
                if not http:
                    problems.append(f"{where}: no {probe}")
                    continue
                if http.get("path") not in ROUTES:
                    problems.append(f"{where}: {probe} asks {http.get('path')}, not a route the service serves")
                probe_port = ports.get(http.get("port"), http.get("port"))
                if probe_port != port:
                    problems.append(f"{where}: {probe} asks port {http.get('port')}, the service listens on {port}")
            ann = w["spec"]["template"]["metadata"].get("annotations") or {}
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
                problems.append(f"{where}: Prometheus annotations do not point at port {port}")
        if w["kind"] == "Deployment" and w["metadata"]["name"] == "api":
            grace_s = int(config.get("SHUTDOWN_GRACE_MS", "20000")) / 1000
            if pod.get("terminationGracePeriodSeconds", 30) < grace_s + 5:
                problems.append(f"{label}: api's termination grace is shorter than SHUTDOWN_GRACE_MS + 5 s")
    deployments = by_kind.get("Deployment", {})

    def selects(selector, d):
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        return all(labels.get(k) == v for k, v in selector.items())

    for svc in by_kind.get("Service", {}).values():
        matched = [d for d in deployments.values() if selects(svc["spec"]["selector"], d)]
        if not matched:
            problems.append(f"{label}: Service {svc['metadata']['name']} selects no Deployment")
        for d in matched:
            names = {p.get("name") for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
            for p in svc["spec"]["ports"]:
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                    problems.append(f"{label}: Service {svc['metadata']['name']} targets missing port {p['targetPort']}")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(selects(pdb["spec"]["selector"]["matchLabels"], d) for d in deployments.values()):
            problems.append(f"{label}: PodDisruptionBudget {pdb['metadata']['name']} selects nothing")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"{label}: HPA {hpa['metadata']['name']} scales unknown {target}")
        if target == "processor":
            partitions = int(config.get("KAFKA_TOPIC_PARTITIONS", "3"))
            if hpa["spec"]["maxReplicas"] > partitions:
                problems.append(f"{label}: processor may scale to {hpa['spec']['maxReplicas']}, above {partitions} partitions")
    if "api" not in by_kind.get("HorizontalPodAutoscaler", {}):
        problems.append(f"{label}: no HPA for the api")
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                if backend["name"] not in by_kind.get("Service", {}):
                    problems.append(f"{label}: Ingress {ing['metadata']['name']} sends to unknown {backend['name']}")
    if not by_kind.get("Ingress"):
        problems.append(f"{label}: no Ingress for the api")
    jobs = by_kind.get("Job", {})
    if not any(c.get("args") == ["migrate"] for j in jobs.values() for c in j["spec"]["template"]["spec"]["containers"]):
        problems.append(f"{label}: no migration Job (cmd-processor migrate)")
    return problems


# --- Dockerfiles --------------------------------------------------------------

def check_dockerfile(path, service):
    text = path.read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    problems = []
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append(f"{path.name}: not a multi-stage build")
    for image in froms:
        if (p := image_problem(image)):
            problems.append(f"{path.name}: {p}")
    if any(l.upper().startswith("HEALTHCHECK") for l in lines):
        problems.append(f"{path.name}: has a HEALTHCHECK; probes belong to the orchestrator")
    last_stage = text[text.upper().rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", last_stage, re.M)
    if not users or not users[-1].isdigit() or users[-1] == "0":
        problems.append(f"{path.name}: the runtime stage does not switch to a numeric non-root USER")
    exposed = re.findall(r"^EXPOSE\s+(\d+)", last_stage, re.M)
    if exposed != [str(SERVICES[service][1])]:
        problems.append(f"{path.name}: EXPOSE {exposed}, the service listens on {SERVICES[service][1]}")
    for arg in ("ETL_GIT_SHA", "ETL_GIT_BRANCH", "ETL_BUILD_TIME"):
        if not re.search(rf"^ARG\s+{arg}\b", text, re.M):
            problems.append(f"{path.name}: no build arg {arg}")
    if f"cmd-{service}" not in (re.findall(r"^ENTRYPOINT\s+(.*)$", last_stage, re.M) or [""])[-1]:
        problems.append(f"{path.name}: ENTRYPOINT does not run cmd-{service}")
    return problems


def load_inputs(root, argv):
    dev, test = (yaml.safe_load(Path(p).read_text()) for p in argv[:2])
    k8s = {name: [o for o in yaml.safe_load_all(Path(p).read_text()) if o]
           for name, p in zip(("k8s dev", "k8s prod"), argv[2:4])}
    deployments = root / "deployments"
    return {
        "compose": {"compose dev": dev, "compose test": test},
        "k8s": k8s,
        "dashboard": json.loads((deployments / "grafana/dashboards/pipeline.json").read_text()),
        "prometheus": yaml.safe_load((deployments / "prometheus/prometheus.yml").read_text()),
        "provisioning": {
            "datasources": yaml.safe_load((deployments / "grafana/provisioning/datasources/prometheus.yaml").read_text()),
            "dashboards": yaml.safe_load((deployments / "grafana/provisioning/dashboards/pipeline.yaml").read_text()),
        },
        "dockerfiles": {s: (root / f"Dockerfile.{s}") for s in SERVICES},
        "stack_env": {
            stack: ((deployments / stack / "docker-compose.yml").read_text(),
                    (deployments / stack / ".env.example").read_text())
            for stack in ("development",)
        } | {
            # The test stack is the development file with an override on top.
            "test": ((deployments / "development/docker-compose.yml").read_text()
                     + (deployments / "test/docker-compose.yml").read_text(),
                     (deployments / "test/.env.example").read_text()),
        },
    }


def run_checks(root, inputs, dockerfile_texts=None):
    settings = known_settings(root)
    problems = []
    for label, config in inputs["compose"].items():
        problems += check_compose(label, config, settings, inputs["dashboard"],
                                  inputs["prometheus"], inputs["provisioning"])
    for stack, (compose_text, env_text) in inputs["stack_env"].items():
        problems += check_stack_env(f"compose {stack}", compose_text, env_text)
    for label, objects in inputs["k8s"].items():
        problems += check_k8s(label, objects, settings)
    for service, path in inputs["dockerfiles"].items():
        if dockerfile_texts and service in dockerfile_texts:
            tmp = Path("/tmp") / f"deploy-check-{service}.Dockerfile"
            tmp.write_text(dockerfile_texts[service])
            problems += [p.replace(tmp.name, path.name) for p in check_dockerfile(tmp, service)]
        else:
            problems += check_dockerfile(path, service)
    return problems


def self_test(root, inputs):
    """Each breakage must be reported; otherwise the check could not fail."""

    def deployment(objs, name):
        return next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name)

    def container(objs, name):
        return deployment(objs, name)["spec"]["template"]["spec"]["containers"][0]

    breakages = {
        "compose: unknown setting": lambda i: i["compose"]["compose dev"]["services"]["api"]["environment"].__setitem__("API_LISTEN_PORT", "1"),
        "compose: latest image": lambda i: i["compose"]["compose dev"]["services"]["postgres"].__setitem__("image", "postgres:latest"),
        "compose: wrong published port": lambda i: i["compose"]["compose dev"]["services"]["processor"].__setitem__("ports", [{"target": 9999, "published": 9999}]),
        "compose: two brokers": lambda i: i["compose"]["compose dev"]["services"].pop("kafka-3"),
        "compose: healthy without healthcheck": lambda i: i["compose"]["compose dev"]["services"]["postgres"].pop("healthcheck"),
        "compose: unscraped service": lambda i: i["prometheus"]["scrape_configs"].pop(),
        "compose: datasource uid": lambda i: i["provisioning"]["datasources"]["datasources"][0].__setitem__("uid", "other"),
        "compose: spans sent nowhere": lambda i: i["compose"]["compose dev"]["services"]["processor"]["environment"].pop("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "k8s: no trace endpoint": lambda i: next(o for o in i["k8s"]["k8s prod"] if o["kind"] == "ConfigMap")["data"].pop("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "k8s: probe route": lambda i: container(i["k8s"]["k8s dev"], "api")["livenessProbe"]["httpGet"].__setitem__("path", "/healthz"),
        "k8s: probe port": lambda i: container(i["k8s"]["k8s dev"], "processor")["readinessProbe"]["httpGet"].__setitem__("port", 9000),
        "k8s: no limits": lambda i: container(i["k8s"]["k8s prod"], "monitoring")["resources"].pop("limits"),
        "k8s: latest tag": lambda i: container(i["k8s"]["k8s prod"], "api").__setitem__("image", "etl/cmd-api:latest"),
        "k8s: literal secret": lambda i: container(i["k8s"]["k8s dev"], "processor")["env"].append({"name": "DATABASE_URL", "value": "postgres://u:p@h/db"}),
        "k8s: unknown setting": lambda i: container(i["k8s"]["k8s dev"], "monitoring")["env"].append({"name": "MONITOR_PORT", "value": "1"}),
        "k8s: writable root": lambda i: container(i["k8s"]["k8s dev"], "api")["securityContext"].__setitem__("readOnlyRootFilesystem", False),
        "k8s: processor over partitions": lambda i: next(o for o in i["k8s"]["k8s prod"] if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "processor")["spec"].__setitem__("maxReplicas", 6),
        "k8s: short grace": lambda i: deployment(i["k8s"]["k8s dev"], "api")["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 5),
    }
    docker_breakages = {
        "dockerfile: healthcheck": ("api", lambda t: t + "\nHEALTHCHECK CMD true\n"),
        "dockerfile: root user": ("processor", lambda t: t.replace("USER 10001", "USER root")),
        "dockerfile: wrong expose": ("monitoring", lambda t: t.replace("EXPOSE 8082", "EXPOSE 9000")),
    }
    missed = []
    for what, breaks in breakages.items():
        broken = copy.deepcopy(inputs)
        breaks(broken)
        if not run_checks(root, broken):
            missed.append(what)
    for what, (service, breaks) in docker_breakages.items():
        texts = {service: breaks(inputs["dockerfiles"][service].read_text())}
        if not run_checks(root, inputs, texts):
            missed.append(what)
    return missed, len(breakages) + len(docker_breakages)


def main(argv):
    self_testing = "--self-test" in argv
    args = [a for a in argv if a != "--self-test"]
    root = Path(args[0])
    inputs = load_inputs(root, args[1:])
    problems = run_checks(root, inputs)
    for p in problems:
        print(f"deploy-check: {p}")
    if self_testing:
        missed, tried = self_test(root, inputs)
        for m in missed:
            print(f"deploy-check: self-test: breakage not caught: {m}")
        print(f"deploy-check: self-test: {tried - len(missed)} of {tried} deliberate breakages caught")
        problems += missed
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
