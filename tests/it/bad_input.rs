//! A corpus of bad fleet input: every case must be rejected with exactly the listed
//! diagnostics (file, line, column, object and message), and the binary must render nothing.
//!
//! Each YAML text starts on the line right after `r#"`, so line 1 is that line.

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;

use crate::support;

struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    // ---------------------------------------------------------------- documents
    Case {
        name: "yaml_syntax_error",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 2
   memory: 4Gi
"#,
        )],
        expect: &["db.yaml:7:10: invalid YAML: mapping values are not allowed in this context"],
    },
    Case {
        name: "document_is_a_list",
        files: &[(
            "db.yaml",
            r#"- apiVersion: vm.novasphere.dev/v1alpha1
  kind: Wukong
  metadata:
    name: db
  spec:
    cpu: 2
"#,
        )],
        expect: &["db.yaml:1:1: a document must be a mapping with apiVersion and kind"],
    },
    Case {
        name: "missing_api_version",
        files: &[(
            "db.yaml",
            r#"kind: Wukong
metadata:
  name: db
spec:
  cpu: 2
"#,
        )],
        expect: &["db.yaml:1:1: document has no `apiVersion`"],
    },
    Case {
        name: "missing_kind",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
metadata:
  name: db
spec:
  cpu: 2
"#,
        )],
        expect: &["db.yaml:1:1: document has no `kind`"],
    },
    Case {
        name: "wrong_api_version",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:1:13: apiVersion: unsupported apiVersion `vm.novasphere.dev/v1` (expected `vm.novasphere.dev/v1alpha1`)",
        ],
    },
    Case {
        name: "unknown_kind",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: db
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:2:7: kind: unknown kind `VirtualMachine` (expected Wukong, WukongSet or Fleet)",
        ],
    },
    Case {
        name: "unknown_top_level_field",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
labels:
  app: db
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:5:1: Wukong default/db: labels: unknown field `labels`; expected one of `apiVersion`, `kind`, `metadata`, `spec`",
        ],
    },
    Case {
        name: "unknown_spec_field_with_suggestion",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpus: 4
  memory: 8Gi
"#,
        )],
        expect: &[
            "db.yaml:6:3: Wukong default/db: spec.cpus: unknown field `cpus`; did you mean `cpu`?",
        ],
    },
    Case {
        name: "unknown_disk_field",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: system
    size: 20Gi
    storageclass: fast
"#,
        )],
        expect: &[
            "db.yaml:9:5: Wukong default/db: spec.disks[0].storageclass: unknown field `storageclass`; did you mean `storageClass`?",
        ],
    },
    Case {
        name: "tab_indentation",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
	name: db
spec:
  cpu: 2
"#,
        )],
        expect: &["db.yaml:4:1: invalid YAML: found character that cannot start any token"],
    },
    Case {
        name: "error_in_second_document_of_a_file",
        files: &[(
            "vms.yaml",
            r#"# databases and apps
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 2
---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: app
spec:
  cpu: 2
  memory: 4GB
"#,
        )],
        expect: &[
            "vms.yaml:15:11: Wukong default/app: spec.memory: invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
        ],
    },
    Case {
        name: "missing_spec",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
"#,
        )],
        expect: &["db.yaml:1:1: Wukong default/db: missing field `spec`"],
    },
    Case {
        name: "unknown_metadata_field",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  label:
    app: db
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:5:3: Wukong default/db: metadata.label: unknown field `label`; did you mean `labels`?",
        ],
    },
    // ---------------------------------------------------------------- types and values
    Case {
        name: "cpu_is_a_word",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: "four"
"#,
        )],
        expect: &[
            "db.yaml:6:8: Wukong default/db: spec.cpu: invalid value: string \"four\", expected a non-negative integer",
        ],
    },
    Case {
        name: "cpu_is_a_boolean",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: true
"#,
        )],
        expect: &[
            "db.yaml:6:8: Wukong default/db: spec.cpu: invalid type: boolean `true`, expected a non-negative integer",
        ],
    },
    Case {
        name: "memory_is_a_list",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: [1]
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: invalid type: sequence, expected a Kubernetes quantity such as \"4Gi\"",
        ],
    },
    Case {
        name: "cpu_negative",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: -2
"#,
        )],
        expect: &[
            "db.yaml:6:8: Wukong default/db: spec.cpu: invalid value: integer `-2`, expected a non-negative integer",
        ],
    },
    Case {
        name: "cpu_zero",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 0
"#,
        )],
        expect: &["db.yaml:6:8: Wukong default/db: spec.cpu: must be at least 1"],
    },
    Case {
        name: "cpu_above_kubevirt_limit",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 600
"#,
        )],
        expect: &[
            "db.yaml:6:8: Wukong default/db: spec.cpu: 600 is above the KubeVirt limit of 512 vCPUs",
        ],
    },
    Case {
        name: "memory_with_si_byte_suffix",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 4GB
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
        ],
    },
    Case {
        name: "disk_size_with_two_decimal_points",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: system
    size: 1.5.5Gi
"#,
        )],
        expect: &[
            "db.yaml:8:11: Wukong default/db: spec.disks[0].size: invalid quantity `1.5.5Gi`: more than one decimal point",
        ],
    },
    Case {
        name: "memory_fractional_bytes",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: "1.5"
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 1500m is not a whole number of bytes",
        ],
    },
    // ---------------------------------------------------------------- enums
    Case {
        name: "unknown_network_type",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: vlan
"#,
        )],
        expect: &[
            "db.yaml:8:11: Wukong default/db: spec.networks[0].type: unknown variant `vlan`, expected one of `pod`, `bridge`, `macvlan`, `sriov`, `ovs`",
        ],
    },
    Case {
        name: "unknown_run_strategy",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  runStrategy: Stopped
"#,
        )],
        expect: &[
            "db.yaml:6:16: Wukong default/db: spec.runStrategy: unknown variant `Stopped`, expected one of `Always`, `RerunOnFailure`, `Halted`",
        ],
    },
    Case {
        name: "unknown_ip_config_mode",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    ipConfig:
      mode: manual
      address: 192.168.1.10/24
"#,
        )],
        expect: &[
            "db.yaml:10:13: Wukong default/db: spec.networks[0].ipConfig.mode: unknown variant `manual`, expected `dhcp` or `static`",
        ],
    },
    Case {
        name: "unknown_lifecycle_action",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  lifecycleAction:
    action: pause
"#,
        )],
        expect: &[
            "db.yaml:7:13: Wukong default/db: spec.lifecycleAction.action: unknown variant `pause`, expected `suspend` or `resume`",
        ],
    },
    // ---------------------------------------------------------------- required fields
    Case {
        name: "disk_without_size",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: data
    image: docker://quay.io/kubevirt/fedora-cloud-container-disk-demo
"#,
        )],
        expect: &["db.yaml:7:5: Wukong default/db: spec.disks[0]: missing field `size`"],
    },
    Case {
        name: "network_without_type",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    bridge: br1
"#,
        )],
        expect: &["db.yaml:7:5: Wukong default/db: spec.networks[0]: missing field `type`"],
    },
    // ---------------------------------------------------------------- several errors
    Case {
        name: "several_errors_in_one_document",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 16
  memory: 64Gi
  scalingPolicy:
    enableHotPlug: true
    maxCPU: 8
    maxMemory: 32Gi
  disks:
  - name: system
    size: 20Gi
  - name: system
    size: 50Gi
"#,
        )],
        expect: &[
            "db.yaml:6:8: Wukong default/db: spec.cpu: 16 is above scalingPolicy.maxCPU (8)",
            "db.yaml:7:11: Wukong default/db: spec.memory: 64Gi is above scalingPolicy.maxMemory (32Gi)",
            "db.yaml:15:11: Wukong default/db: spec.disks[1].name: disk `system` is declared twice",
        ],
    },
    Case {
        name: "several_structural_errors_in_one_document",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpus: 4
  memory: 4GB
  runStrategy: Stopped
"#,
        )],
        expect: &[
            "db.yaml:6:3: Wukong default/db: spec.cpus: unknown field `cpus`; did you mean `cpu`?",
            "db.yaml:7:11: Wukong default/db: spec.memory: invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
            "db.yaml:8:16: Wukong default/db: spec.runStrategy: unknown variant `Stopped`, expected one of `Always`, `RerunOnFailure`, `Halted`",
        ],
    },
    Case {
        name: "errors_in_two_files",
        files: &[
            (
                "vms/db.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 0
"#,
            ),
            (
                "vms/app.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: app
spec:
  memory: 4GB
"#,
            ),
        ],
        expect: &[
            "vms/app.yaml:6:11: Wukong default/app: spec.memory: invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
            "vms/db.yaml:6:8: Wukong default/db: spec.cpu: must be at least 1",
        ],
    },
    // ---------------------------------------------------------------- names
    Case {
        name: "duplicate_vm_across_files",
        files: &[
            (
                "a.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 2
"#,
            ),
            (
                "b.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 4
"#,
            ),
        ],
        expect: &[
            "b.yaml:4:9: Wukong default/db: metadata.name: VM `default/db` is already declared at a.yaml:4:9",
        ],
    },
    Case {
        name: "wukong_clashes_with_set_instance",
        files: &[
            (
                "a-set.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    spec:
      cpu: 2
"#,
            ),
            (
                "b-vm.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: web-1
spec:
  cpu: 2
"#,
            ),
        ],
        expect: &[
            "b-vm.yaml:4:9: Wukong default/web-1: metadata.name: VM `default/web-1` is already declared at a-set.yaml:4:9",
        ],
    },
    Case {
        name: "duplicate_disk_name",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: data
    size: 20Gi
  - name: data
    size: 100Gi
"#,
        )],
        expect: &[
            "db.yaml:9:11: Wukong default/db: spec.disks[1].name: disk `data` is declared twice",
        ],
    },
    Case {
        name: "set_instance_clashes_with_earlier_wukong",
        files: &[
            (
                "vm.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: web-1
spec:
  cpu: 2
"#,
            ),
            (
                "web.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    spec:
      cpu: 2
"#,
            ),
        ],
        expect: &[
            "web.yaml:4:9: WukongSet default/web (instance web-1): metadata.name: VM `default/web-1` is already declared at vm.yaml:4:9",
        ],
    },
    Case {
        name: "duplicate_disk_through_yaml_alias",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - &data
    name: data
    size: 10Gi
  - *data
"#,
        )],
        expect: &[
            "db.yaml:10:5: Wukong default/db: spec.disks[1].name: disk `data` is declared twice",
        ],
    },
    Case {
        name: "duplicate_network_name",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    macAddress: 02:00:00:00:00:01
  - name: eth1
    type: macvlan
    macAddress: 02:00:00:00:00:02
"#,
        )],
        expect: &[
            "db.yaml:10:11: Wukong default/db: spec.networks[1].name: network `eth1` is declared twice",
        ],
    },
    Case {
        name: "reserved_disk_name",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: cloudinitdisk
    size: 1Gi
"#,
        )],
        expect: &[
            "db.yaml:7:11: Wukong default/db: spec.disks[0].name: `cloudinitdisk` is reserved for the cloud-init disk",
        ],
    },
    Case {
        name: "vm_name_upper_case",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: Database
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:4:9: Wukong default/Database: metadata.name: `Database` is not a valid name (lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters)",
        ],
    },
    Case {
        name: "vm_name_too_long",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: analytics-warehouse-primary-database-server-eu-west-1-zone-a-001
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:4:9: Wukong default/analytics-warehouse-primary-database-server-eu-west-1-zone-a-001: metadata.name: `analytics-warehouse-primary-database-server-eu-west-1-zone-a-001` is not a valid name (lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters)",
        ],
    },
    Case {
        name: "invalid_namespace",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  namespace: Prod_EU
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:5:14: Wukong Prod_EU/db: metadata.namespace: `Prod_EU` is not a valid name (lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters)",
        ],
    },
    Case {
        name: "namespace_outside_allowlist",
        files: &[
            (
                "db.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  namespace: kube-system
spec:
  cpu: 2
"#,
            ),
            (
                "wukong.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: prod
spec:
  namespaces: [prod, staging]
"#,
            ),
        ],
        expect: &[
            "db.yaml:5:14: Wukong kube-system/db: metadata.namespace: namespace `kube-system` is not in the fleet's allowed namespaces (prod, staging)",
        ],
    },
    Case {
        name: "two_fleet_documents",
        files: &[(
            "wukong.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: prod
spec:
  prune: true
---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: staging
spec:
  prune: false
"#,
        )],
        expect: &[
            "wukong.yaml:8:1: Fleet: a fleet may have only one Fleet document; the first is at wukong.yaml:1:1",
        ],
    },
    // ---------------------------------------------------------------- scaling bounds
    Case {
        name: "cpu_below_min_cpu",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 1
  scalingPolicy:
    minCPU: 2
    maxCPU: 8
"#,
        )],
        expect: &["db.yaml:6:8: Wukong default/db: spec.cpu: 1 is below scalingPolicy.minCPU (2)"],
    },
    Case {
        name: "cpu_above_max_cpu",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 12
  scalingPolicy:
    enableHotPlug: true
    minCPU: 1
    maxCPU: 8
"#,
        )],
        expect: &["db.yaml:6:8: Wukong default/db: spec.cpu: 12 is above scalingPolicy.maxCPU (8)"],
    },
    Case {
        name: "min_cpu_above_max_cpu",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  cpu: 4
  scalingPolicy:
    minCPU: 8
    maxCPU: 2
"#,
        )],
        // contradictory bounds are reported once, not as cpu being both too high and too low
        expect: &[
            "db.yaml:8:13: Wukong default/db: spec.scalingPolicy.minCPU: 8 is above scalingPolicy.maxCPU (2)",
        ],
    },
    Case {
        name: "memory_above_max_memory",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 32Gi
  scalingPolicy:
    maxMemory: 16Gi
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 32Gi is above scalingPolicy.maxMemory (16Gi)",
        ],
    },
    Case {
        name: "memory_below_min_memory",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 2Gi
  scalingPolicy:
    minMemory: 4Gi
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 2Gi is below scalingPolicy.minMemory (4Gi)",
        ],
    },
    Case {
        name: "hotplug_memory_below_1gi",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 512Mi
  scalingPolicy:
    enableHotPlug: true
    maxMemory: 8Gi
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 512Mi is below 1Gi, the minimum for memory hot-plug (scalingPolicy.enableHotPlug)",
        ],
    },
    Case {
        name: "hotplug_memory_not_2mi_aligned",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 4097Mi
  scalingPolicy:
    enableHotPlug: true
    maxMemory: 8Gi
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 4097Mi is not a multiple of 2Mi, which memory hot-plug requires (scalingPolicy.enableHotPlug)",
        ],
    },
    Case {
        name: "disk_size_above_max_size",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: data
    size: 200Gi
    scalingPolicy:
      enableHotExpand: true
      maxSize: 100Gi
"#,
        )],
        expect: &[
            "db.yaml:8:11: Wukong default/db: spec.disks[0].size: 200Gi is above scalingPolicy.maxSize (100Gi)",
        ],
    },
    Case {
        name: "unsupported_image_scheme",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  disks:
  - name: system
    size: 20Gi
    image: s3://images/fedora.qcow2
"#,
        )],
        expect: &[
            "db.yaml:9:12: Wukong default/db: spec.disks[0].image: unsupported image `s3://images/fedora.qcow2` (use docker://…, oci-archive://…, http://… or https://…)",
        ],
    },
    // ---------------------------------------------------------------- networks
    Case {
        name: "sriov_without_resource_name",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: fast
    type: sriov
    vlanId: 100
"#,
        )],
        expect: &[
            "db.yaml:7:5: Wukong default/db: spec.networks[0]: an sriov network needs `resourceName` (the SR-IOV device-plugin resource, e.g. intel.com/sriov_netdevice) or `nadName`",
        ],
    },
    Case {
        name: "vlan_id_out_of_range",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: macvlan
    master: eth0
    vlanId: 5000
"#,
        )],
        expect: &[
            "db.yaml:10:13: Wukong default/db: spec.networks[0].vlanId: 5000 is not a VLAN id (1-4094)",
        ],
    },
    Case {
        name: "field_not_for_network_type",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    master: eth0
"#,
        )],
        expect: &[
            "db.yaml:9:5: Wukong default/db: spec.networks[0].master: does not apply to a `bridge` network",
        ],
    },
    Case {
        name: "nad_name_with_bridge",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    nadName: storage-net
    bridge: br-storage
"#,
        )],
        expect: &[
            "db.yaml:10:5: Wukong default/db: spec.networks[0].bridge: cannot be combined with nadName (the existing NetworkAttachmentDefinition decides it)",
        ],
    },
    Case {
        name: "static_ip_without_address",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    ipConfig:
      mode: static
      gateway: 192.168.1.1
"#,
        )],
        expect: &[
            "db.yaml:10:7: Wukong default/db: spec.networks[0].ipConfig: `mode: static` needs `address` (e.g. 192.168.1.10/24)",
        ],
    },
    Case {
        name: "static_ip_bad_cidr",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    ipConfig:
      mode: static
      address: 192.168.1.300/24
"#,
        )],
        expect: &[
            "db.yaml:11:16: Wukong default/db: spec.networks[0].ipConfig.address: `192.168.1.300/24` is not an address with prefix length like 192.168.1.10/24",
        ],
    },
    Case {
        name: "gateway_of_other_family",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    ipConfig:
      mode: static
      address: 192.168.1.10/24
      gateway: fd00::1
"#,
        )],
        expect: &[
            "db.yaml:12:16: Wukong default/db: spec.networks[0].ipConfig.gateway: gateway `fd00::1` is not of the same IP family as `192.168.1.10/24`",
        ],
    },
    Case {
        name: "dhcp_with_address",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    ipConfig:
      mode: dhcp
      address: 192.168.1.10/24
"#,
        )],
        expect: &[
            "db.yaml:11:7: Wukong default/db: spec.networks[0].ipConfig.address: does not apply to `mode: dhcp`",
        ],
    },
    Case {
        name: "static_address_on_pod_network",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: default
    type: pod
    ipConfig:
      mode: static
      address: 10.0.0.5/24
"#,
        )],
        expect: &[
            "db.yaml:10:13: Wukong default/db: spec.networks[0].ipConfig.mode: the pod network gets its address from KubeVirt (masquerade); static addresses are for bridge, macvlan, sriov and ovs networks",
        ],
    },
    Case {
        name: "two_pod_networks",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: default
    type: pod
  - name: pod2
    type: pod
"#,
        )],
        expect: &[
            "db.yaml:10:11: Wukong default/db: spec.networks[1].type: a VM can have only one pod network",
        ],
    },
    Case {
        name: "two_primary_networks",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth0
    type: bridge
    primary: true
  - name: eth1
    type: macvlan
    primary: true
"#,
        )],
        expect: &[
            "db.yaml:12:14: Wukong default/db: spec.networks[1].primary: a VM can have only one primary network",
        ],
    },
    Case {
        name: "invalid_mac_address",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    macAddress: 02:00:00:00:00:zz
"#,
        )],
        expect: &[
            "db.yaml:9:17: Wukong default/db: spec.networks[0].macAddress: `02:00:00:00:00:zz` is not a unicast MAC address like 02:00:00:00:00:01",
        ],
    },
    Case {
        name: "duplicate_mac_address",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: eth1
    type: bridge
    macAddress: 02:00:00:00:00:01
  - name: eth2
    type: bridge
    macAddress: 02:00:00:00:00:01
"#,
        )],
        expect: &[
            "db.yaml:12:17: Wukong default/db: spec.networks[1].macAddress: MAC address 02:00:00:00:00:01 is also used by network `eth1`",
        ],
    },
    Case {
        name: "several_network_problems",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: default
    type: pod
    vlanId: 10
  - name: eth1
    type: bridge
    mtu: 100
    nadName: Storage/Net
  - name: eth2
    type: bridge
    primary: true
"#,
        )],
        expect: &[
            "db.yaml:9:5: Wukong default/db: spec.networks[0].vlanId: does not apply to a `pod` network",
            "db.yaml:12:5: Wukong default/db: spec.networks[1].mtu: cannot be combined with nadName (the existing NetworkAttachmentDefinition decides it)",
            "db.yaml:12:10: Wukong default/db: spec.networks[1].mtu: 100 is outside 576-9216",
            "db.yaml:13:14: Wukong default/db: spec.networks[1].nadName: `Storage/Net` is not `name` or `namespace/name` of a NetworkAttachmentDefinition",
            "db.yaml:16:14: Wukong default/db: spec.networks[2].primary: the VM already has the pod network `default` as its primary network",
        ],
    },
    // ---------------------------------------------------------------- power, labels
    Case {
        name: "suspended_while_halted",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  runStrategy: Halted
  lifecycleAction:
    action: suspend
"#,
        )],
        expect: &[
            "db.yaml:8:13: Wukong default/db: spec.lifecycleAction.action: a VM cannot be suspended while runStrategy is Halted (stopped)",
        ],
    },
    Case {
        name: "reserved_label",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  labels:
    app.kubernetes.io/managed-by: helm
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:6:5: Wukong default/db: metadata.labels.app.kubernetes.io/managed-by: label `app.kubernetes.io/managed-by` is reserved for Wukong",
        ],
    },
    Case {
        name: "reserved_label_prefix",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  labels:
    wukong.novasphere.dev/fleet: other
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:6:5: Wukong default/db: metadata.labels.wukong.novasphere.dev/fleet: label `wukong.novasphere.dev/fleet` is reserved for Wukong",
        ],
    },
    Case {
        name: "invalid_label_value",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
  labels:
    owner: team db
spec:
  cpu: 2
"#,
        )],
        expect: &[
            "db.yaml:6:12: Wukong default/db: metadata.labels.owner: `team db` is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit)",
        ],
    },
    // ---------------------------------------------------------------- WukongSet
    Case {
        name: "set_unknown_variable",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    metadata:
      labels:
        node-index: "${IDX}"
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:10:21: WukongSet default/web (all 3 instances): spec.template.metadata.labels.node-index: cannot expand `${IDX}`: unknown variable `IDX` (known: INDEX, NAME, SET, NAMESPACE, REPLICAS)",
        ],
    },
    Case {
        name: "set_division_by_zero",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    spec:
      cpu: "${INDEX/0}"
"#,
        )],
        expect: &[
            "web.yaml:9:12: WukongSet default/web (all 3 instances): spec.template.spec.cpu: cannot expand `${INDEX/0}`: division by zero",
        ],
    },
    Case {
        name: "set_expression_fails_for_some_instances",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 6
  template:
    spec:
      cpu: "${4-INDEX}"
"#,
        )],
        expect: &[
            "web.yaml:9:12: WukongSet default/web (instance web-4): spec.template.spec.cpu: must be at least 1",
            "web.yaml:9:12: WukongSet default/web (instance web-5): spec.template.spec.cpu: invalid value: integer `-1`, expected a non-negative integer",
        ],
    },
    Case {
        name: "set_unknown_template_field",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    spec:
      cpus: 2
      memory: 4Gi
"#,
        )],
        expect: &[
            "web.yaml:9:7: WukongSet default/web (all 3 instances): spec.template.spec.cpus: unknown field `cpus`; did you mean `cpu`?",
        ],
    },
    Case {
        name: "set_unclosed_expression",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      cpu: "${INDEX+1"
"#,
        )],
        expect: &[
            "web.yaml:9:12: WukongSet default/web (all 2 instances): spec.template.spec.cpu: cannot expand `${INDEX+1`: `${` is not closed by `}`",
        ],
    },
    Case {
        name: "set_negative_replicas",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: -1
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:6:13: WukongSet default/web: spec.replicas: invalid value: integer `-1`, expected a non-negative integer",
        ],
    },
    Case {
        name: "set_instance_name_too_long",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: analytics-warehouse-primary-database-server-eu-west-1-zone-ab
spec:
  replicas: 12
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:4:9: WukongSet default/analytics-warehouse-primary-database-server-eu-west-1-zone-ab: metadata.name: instance name `analytics-warehouse-primary-database-server-eu-west-1-zone-ab-11` would be longer than 63 characters",
        ],
    },
    Case {
        name: "set_too_many_replicas",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 100001
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:6:13: WukongSet default/web: spec.replicas: 100001 is above the limit of 100000 replicas per set",
        ],
    },
    Case {
        name: "set_rollout_cannot_proceed",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 0
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:8:5: WukongSet default/web: spec.updateStrategy: maxUnavailable (0) and maxSurge (0) cannot both be 0: the rollout could never proceed",
        ],
    },
    Case {
        name: "set_max_unavailable_given_twice",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  updateStrategy:
    type: RollingUpdate
    maxUnavailable: 1
    rollingUpdate:
      maxUnavailable: 2
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:9:21: WukongSet default/web: spec.updateStrategy.maxUnavailable: set either updateStrategy.maxUnavailable or updateStrategy.rollingUpdate.maxUnavailable, not both",
        ],
    },
    Case {
        name: "set_recreate_with_rolling_update",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  updateStrategy:
    type: Recreate
    rollingUpdate:
      maxSurge: 1
  template:
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:8:11: WukongSet default/web: spec.updateStrategy.type: `Recreate` does not take maxUnavailable, maxSurge or rollingUpdate",
        ],
    },
    Case {
        name: "set_template_names_its_instances",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    metadata:
      name: web-vm
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:9:7: WukongSet default/web (all 3 instances): spec.template.metadata.name: is not allowed: instances are named `<set>-<index>` in the set's namespace",
        ],
    },
    Case {
        name: "set_selector_conflicts_with_template",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web-server
  template:
    metadata:
      labels:
        app: web
    spec:
      cpu: 2
"#,
        )],
        expect: &[
            "web.yaml:9:12: WukongSet default/web (all 3 instances): spec.selector.matchLabels.app: selector wants `app: web-server` but the template sets `app: web`",
        ],
    },
    // ---------------------------------------------------------------- Fleet
    Case {
        name: "fleet_max_parallel_zero",
        files: &[(
            "wukong.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: prod
spec:
  maxParallel: 0
"#,
        )],
        expect: &["wukong.yaml:6:16: Fleet: spec.maxParallel: must be at least 1"],
    },
    Case {
        name: "fleet_default_namespace_not_allowed",
        files: &[(
            "wukong.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: prod
spec:
  namespaces: [prod]
  defaultNamespace: staging
"#,
        )],
        expect: &[
            "wukong.yaml:7:21: Fleet: spec.defaultNamespace: namespace `staging` is not in spec.namespaces",
        ],
    },
    Case {
        name: "fleet_templates_outside_repository",
        files: &[(
            "wukong.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: prod
spec:
  templates: ../shared-templates
"#,
        )],
        expect: &[
            "wukong.yaml:6:14: Fleet: spec.templates: `../shared-templates` must be a directory inside the fleet repository",
        ],
    },
    // Regression: a dropped field moved later fields (swap removal) and a hidden "missing
    // field" ended the search, so `runStrategy` went unreported.
    Case {
        name: "errors_after_a_dropped_required_field_are_still_reported",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 4GB
  runStrategy: Stopped
  lifecycleAction: {action: pause}
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
            "db.yaml:7:16: Wukong default/db: spec.runStrategy: unknown variant `Stopped`, expected one of `Always`, `RerunOnFailure`, `Halted`",
            "db.yaml:8:29: Wukong default/db: spec.lifecycleAction.action: unknown variant `pause`, expected `suspend` or `resume`",
        ],
    },
    // Regression: the second `eth1` also drew a false "MAC address also used" error.
    Case {
        name: "duplicate_network_name_alone",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - {name: eth1, type: bridge}
  - {name: eth1, type: bridge}
"#,
        )],
        expect: &[
            "db.yaml:8:12: Wukong default/db: spec.networks[1].name: network `eth1` is declared twice",
        ],
    },
    // Regression: reported at the first VM's name, not at the duplicate address.
    Case {
        name: "duplicate_static_address_across_vms",
        files: &[
            (
                "a.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
  - name: lan
    type: bridge
    ipConfig: {mode: static, address: 10.0.0.5/24}
"#,
            ),
            (
                "b.yaml",
                r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: app
spec:
  networks:
  - name: lan
    type: bridge
    ipConfig:
      mode: static
      address: 10.0.0.5/16
"#,
            ),
        ],
        expect: &[
            "b.yaml:11:16: Wukong default/app: network `lan`: address 10.0.0.5 on `wk-bridge-br0` is already assigned to VM `db` (a.yaml:9:39)",
        ],
    },
    Case {
        name: "duplicate_static_address_within_a_set",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 3
  template:
    spec:
      networks:
      - name: lan
        type: bridge
        ipConfig: {mode: static, address: "10.0.0.${INDEX%2+1}/24"}
"#,
        )],
        expect: &[
            "web.yaml:12:43: WukongSet default/web (instance web-2): network `lan`: address 10.0.0.1 on `wk-bridge-br0` is already assigned to VM `web-0` (web.yaml:12:43)",
        ],
    },
    // Regression: a set scaled to zero skipped its template entirely.
    Case {
        name: "set_scaled_to_zero_still_checks_its_template",
        files: &[(
            "web.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 0
  template:
    spec:
      cpu: "${IDX}"
"#,
        )],
        expect: &[
            "web.yaml:9:12: WukongSet default/web (template, checked as instance 0 of a set scaled to 0): spec.template.spec.cpu: cannot expand `${IDX}`: unknown variable `IDX` (known: INDEX, NAME, SET, NAMESPACE, REPLICAS)",
        ],
    },
    // ---------------------------------------------------------------- issue #13
    // Finding 5: a misspelt API group silently dropped every VM of the file.
    Case {
        name: "api_group_misspelt_is_not_another_api",
        files: &[
            (
                "a.yaml",
                r#"apiVersion: vm.novasphere.io/v1alpha1
kind: Wukong
metadata:
  name: a
"#,
            ),
            (
                "b.yaml",
                r#"apiVersion: vm.novaspere.dev/v1alpha1
kind: WukongSet
metadata:
  name: b
"#,
            ),
        ],
        expect: &[
            "a.yaml:1:13: apiVersion: unknown API group `vm.novasphere.io`; did you mean `vm.novasphere.dev/v1alpha1`? (documents of other APIs are skipped, so this Wukong would be left out of the fleet)",
            "b.yaml:1:13: apiVersion: unknown API group `vm.novaspere.dev`; did you mean `vm.novasphere.dev/v1alpha1`? (documents of other APIs are skipped, so this WukongSet would be left out of the fleet)",
        ],
    },
    Case {
        name: "prune_guard_percent_out_of_range",
        files: &[(
            "wukong.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: f
spec:
  prune: true
  pruneGuard: {allowEmpty: false, maxDeletePercent: 0}
  maxVMs: 0
"#,
        )],
        expect: &[
            "wukong.yaml:7:53: Fleet: spec.pruneGuard.maxDeletePercent: must be a percentage from 1 to 100",
            "wukong.yaml:8:11: Fleet: spec.maxVMs: must be between 1 and 100000",
        ],
    },
    // Finding 6: a 1 KB file declared 800,000 VMs and took 8 GB before it failed.
    Case {
        name: "fleet_wide_vm_cap_before_expansion",
        files: &[(
            "sets.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: a
spec:
  replicas: 15000
  template:
    spec: {cpu: 1}
---
apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: b
spec:
  replicas: 15000
  template:
    spec: {cpu: 1}
"#,
        )],
        expect: &[
            "sets.yaml:6:13: WukongSet default/a: spec.replicas: the fleet declares 30000 VMs (2 WukongSets, 0 Wukongs), above its limit of 20000 (Fleet spec.maxVMs, at most 100000); this set declares 15000",
        ],
    },
    // Finding 10: quantities and sizes the cluster would refuse, references outside the fleet.
    Case {
        name: "memory_of_one_byte",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  memory: 1
"#,
        )],
        expect: &[
            "db.yaml:6:11: Wukong default/db: spec.memory: 1 is below 1Mi: no guest boots on that (a unit left out? e.g. 512Mi, 4Gi)",
        ],
    },
    Case {
        name: "nad_name_in_a_namespace_outside_the_allowlist",
        files: &[(
            "db.yaml",
            r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: f
spec:
  namespaces: [apps]
---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
  networks:
    - name: lan
      type: bridge
      nadName: other/lan
"#,
        )],
        expect: &[
            "db.yaml:16:16: Wukong apps/db: spec.networks[0].nadName: namespace `other` is not in the fleet's allowed namespaces (apps)",
        ],
    },
    Case {
        name: "user_data_above_what_kubevirt_accepts_inline",
        files: &[("db.yaml", USER_DATA_3K)],
        expect: &[
            "db.yaml:7:15: Wukong default/db: spec.cloudInit.userData: 3072 bytes of user data, above the 2048 bytes KubeVirt accepts inline (cloudInitUserMaxLen)",
        ],
    },
];

/// A VM with 3 KiB of user data (a `const` cannot be built with `format!`).
const USER_DATA_3K: &str = concat!(
    "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata:\n  name: db\nspec:\n  cloudInit:\n    userData: \"",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "#cloud-config                                                                                                                   ",
    "\"\n"
);

/// `got` as Rust string literals, ready to paste into a case.
fn literals(got: &[String]) -> String {
    got.iter().fold(String::new(), |mut out, g| {
        let _ = writeln!(out, "            {g:?},");
        out
    })
}

#[test]
fn every_bad_input_is_rejected_with_its_exact_messages() {
    let mut failures = String::new();
    for case in CASES {
        let want: Vec<String> = case.expect.iter().map(|s| (*s).to_owned()).collect();
        match support::diagnostics(case.files) {
            Err(got) if got == want => {}
            Err(got) => {
                let _ = write!(
                    failures,
                    "\n--- {}\n  want:\n{}  got:\n{}",
                    case.name,
                    literals(&want),
                    literals(&got)
                );
            }
            Ok(_) => {
                let _ = write!(
                    failures,
                    "\n--- {}\n  accepted, but must be rejected\n",
                    case.name
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad inputs not rejected as pinned:{failures}"
    );
}

#[test]
fn bad_input_never_renders_anything() -> Result<(), Box<dyn Error>> {
    let mut failures = String::new();
    for case in CASES {
        let dir = tempfile::tempdir()?;
        for (path, text) in case.files {
            let file = dir.path().join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, text)?;
        }
        let root = dir.path().to_string_lossy().into_owned();
        let out = support::wukong(&["render", &root], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit code {:?}, want 1", out.status.code()));
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout is not empty:\n{stdout}"));
        }
        for e in case.expect {
            if !stderr.contains(e) {
                problems.push(format!("stderr lacks {e:?}"));
            }
        }
        if !problems.is_empty() {
            let _ = write!(
                failures,
                "\n--- {}\n  {}\n  stderr:\n{stderr}",
                case.name,
                problems.join("\n  ")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "bad inputs not refused by `wukong render`:{failures}"
    );
    Ok(())
}

#[test]
fn corpus_is_large_and_names_are_unique() {
    let mut names = BTreeSet::new();
    let duplicates: Vec<&str> = CASES
        .iter()
        .map(|c| c.name)
        .filter(|n| !names.insert(*n))
        .collect();
    assert!(
        duplicates.is_empty(),
        "duplicate case names: {duplicates:?}"
    );
    assert!(
        CASES.len() >= 45,
        "only {} cases, want at least 45",
        CASES.len()
    );
    for case in CASES {
        assert!(
            !case.expect.is_empty(),
            "{}: no expected diagnostics",
            case.name
        );
        assert!(!case.files.is_empty(), "{}: no files", case.name);
    }
}
