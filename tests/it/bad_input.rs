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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
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
        expect: &[],
    },
];

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
