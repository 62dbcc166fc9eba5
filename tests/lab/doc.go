// Package lab builds and tears down network-namespace topologies for calyx's
// end-to-end tests and for the calyx-lab command.
//
// A lab is identified by a short run prefix ("cx" and four hex digits). Every
// namespace it creates is named "<prefix>-<name>" and every interface it
// creates starts with the prefix (or is renamed to eth0 inside a lab
// namespace), so leftovers of a crashed run can always be found and removed
// with Reap. Nothing is created in the root network namespace.
//
// Layout of one lab:
//
//	<prefix>-fabric     underlay segment: bridge <prefix>br with the gateway address (10.30.0.1/24)
//	<prefix>-<host>     one per host: eth0 (underlay, joined to the segment bridge), lo,
//	                    and the host side of every workload (<prefix>w<N>): a veth, or
//	                    for a VM a tap
//	<prefix>-<workload> one per workload: eth0 (/32, default via 169.254.1.1; with DHCP
//	                    no address until a client runs), lo; for a VM eth0 is a tap
//	                    too, and the VM's relay process runs here, one per NIC: a VM
//	                    given further NICs (AddNIC) has eth1, eth2, ... here, each with
//	                    its own host tap <prefix>w<N> and WorkloadEndpoint
//	<prefix>-<router>   optional (AddRouter): one leg <prefix>r<N> per segment, plugged into
//	                    the segment's bridge (port <prefix>u<N>) and carrying the segment's
//	                    gateway address in place of the bridge; forwarding, connected routes only
//	<prefix>-etcd       optional (AddEtcd): eth0 on a segment (10.30.0.2 on fabric) running etcd,
//	                    optionally with TLS; then the datastore of the agents and of calyxctl,
//	                    reached by every host through the underlay (see Etcd)
//
// Workloads come in two kinds (Options.WorkloadKind, $CALYX_LAB_WORKLOAD):
// pods on a veth pair (KindVeth) and virtual machines (KindVM) modelled on
// libvirt/QEMU with vhost-net: a relay process ("calyx-lab vm-relay", see
// RunVMRelay) holds the fds of the host tap and of the instance's eth0 tap,
// both with a virtio_net_hdr and TSO/checksum offload, and copies frames
// between them unsegmented. The taps exist only while the relay runs:
// StopVM, StartVM and MigrateWorkload stop, reboot and move the VM, with
// all its NICs.
//
// An instance with Workload.DHCP boots without an address; DHClient
// (Debian's isc-dhcp-client), UDHCPC (busybox) and RDisc6 run real clients
// inside it, bounded in time, with their files under dhcp/ in the lab's
// directory and its resolv.conf at /etc/netns/<namespace>/resolv.conf
// (which "ip netns exec" mounts over /etc/resolv.conf for them).
//
// BuildStandard makes the single-host topology; BuildMultiHost the
// three-host one (segments fabric 10.30.0.0/24 and remote 10.30.1.0/24, a
// router between them, host-a and host-b on fabric, host-c on remote, a
// workload on each), where captures (StartCapture) show which traffic the
// hosts encapsulate.
//
// State on disk lives under /run/calyx-lab/<prefix>/: a bpffs mounted at
// bpffs/ (each agent pins under bpffs/<host>, outside /sys because
// "ip netns exec" remounts /sys), the file datastore at datastore/, the
// agent logs, each VM relay's log and counters (vm-<name>.log,
// vm-<name>.json), the DHCP clients' files (dhcp/<instance>/) and, with an
// etcd, etcd/ (data, certificates) and etcd.log. The only thing outside
// it is /etc/netns/<namespace>/ of an instance a DHCP client ran in.
//
// Every command the lab runs is bounded by a timeout, and Close removes
// everything the lab made, whether setup completed or not.
package lab
