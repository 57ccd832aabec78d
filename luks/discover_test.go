package luks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/report"
)

// The fixture trees under testdata/systems copy the layout of real /sys,
// /proc and /etc (see testdata/systems/README.md). Each test below states
// the exact mapping of every disk-backed mount, swap area and crypttab
// entry, and the exact findings.

// discMountLine summarises a disk-backed mount:
// "mount point | source | device | encryption | crypt device | LUKS backing | stack | unencrypted".
func discMountLine(m Mount) string {
	return strings.Join([]string{m.MountPoint, m.Source, m.Device, m.Encryption, m.CryptDevice, m.LUKSBacking,
		strings.Join(m.Stack, ","), strings.Join(m.Unencrypted, ",")}, " | ")
}

// discSwapLine summarises a swap area:
// "source | type | device | mount point | encryption | crypt device | LUKS backing | stack | unencrypted".
func discSwapLine(w Swap) string {
	return strings.Join([]string{w.Source, w.Type, w.Device, w.MountPoint, w.Encryption, w.CryptDevice, w.LUKSBacking,
		strings.Join(w.Stack, ","), strings.Join(w.Unencrypted, ",")}, " | ")
}

func discFindingLine(f report.Finding) string {
	return fmt.Sprintf("%s %s %s: %s", f.Severity, f.ID, f.Subject, f.Message)
}

type discFixture struct {
	name     string
	mounts   []string // disk-backed mounts, in order; all others must be pseudo
	swaps    []string
	crypttab []string // "name -> resolved"
	luks     []string // LUKSDevices
	findings []string
}

var discFixtures = []discFixture{
	{
		// Ubuntu 24.04 on NVMe: LUKS2 on nvme0n1p3, LVM on it with /,
		// /home and swap; /boot and /boot/efi plain; snaps on loop
		// devices whose images live on /; docker overlay. sys/block
		// entries are symlinks into sys/devices as on a real system.
		name: "encrypted-host",
		mounts: []string{
			"/ | /dev/mapper/ubuntu--vg-ubuntu--lv | dm-1 | luks2 | /dev/mapper/dm_crypt-0 | /dev/nvme0n1p3 | dm-1,dm-0,nvme0n1p3,nvme0n1 | ",
			"/snap/core22/1380 | /dev/loop0 | loop0 | luks2 | /dev/mapper/dm_crypt-0 | /dev/nvme0n1p3 | loop0,dm-1,dm-0,nvme0n1p3,nvme0n1 | ",
			"/snap/lxd/29351 | /dev/loop1 | loop1 | luks2 | /dev/mapper/dm_crypt-0 | /dev/nvme0n1p3 | loop1,dm-1,dm-0,nvme0n1p3,nvme0n1 | ",
			"/boot | /dev/nvme0n1p2 | nvme0n1p2 | none |  |  | nvme0n1p2,nvme0n1 | nvme0n1p2",
			"/home | /dev/mapper/ubuntu--vg-home | dm-2 | luks2 | /dev/mapper/dm_crypt-0 | /dev/nvme0n1p3 | dm-2,dm-0,nvme0n1p3,nvme0n1 | ",
			"/boot/efi | /dev/nvme0n1p1 | nvme0n1p1 | none |  |  | nvme0n1p1,nvme0n1 | nvme0n1p1",
		},
		swaps: []string{
			"/dev/dm-3 | partition | dm-3 |  | luks2 | /dev/mapper/dm_crypt-0 | /dev/nvme0n1p3 | dm-3,dm-0,nvme0n1p3,nvme0n1 | ",
		},
		crypttab: []string{"dm_crypt-0 -> /dev/nvme0n1p3"},
		luks:     []string{"/dev/nvme0n1p3"},
		findings: nil,
	},
	{
		// Fedora: btrfs / and /home on LUKS2 (sda3), a plain swap
		// partition (sda4) and zram swap.
		name: "unencrypted-swap",
		mounts: []string{
			"/ | /dev/mapper/luks-5b1c0e7a-9d3f-4c2b-8e6a-1f0d9c8b7a65 | dm-0 | luks2 | /dev/mapper/luks-5b1c0e7a-9d3f-4c2b-8e6a-1f0d9c8b7a65 | /dev/sda3 | dm-0,sda3,sda | ",
			"/boot | /dev/sda2 | sda2 | none |  |  | sda2,sda | sda2",
			"/home | /dev/mapper/luks-5b1c0e7a-9d3f-4c2b-8e6a-1f0d9c8b7a65 | dm-0 | luks2 | /dev/mapper/luks-5b1c0e7a-9d3f-4c2b-8e6a-1f0d9c8b7a65 | /dev/sda3 | dm-0,sda3,sda | ",
			"/boot/efi | /dev/sda1 | sda1 | none |  |  | sda1,sda | sda1",
		},
		swaps: []string{
			"/dev/sda4 | partition | sda4 |  | none |  |  | sda4,sda | sda4",
			"/dev/zram0 | partition | zram0 |  | ram |  |  | zram0 | ",
		},
		crypttab: []string{"luks-5b1c0e7a-9d3f-4c2b-8e6a-1f0d9c8b7a65 -> /dev/sda3"},
		luks:     []string{"/dev/sda3"},
		findings: []string{
			"fail LUKS-SWAP-UNENCRYPTED /dev/sda4: swap /dev/sda4 is not encrypted: no dm-crypt layer above sda4",
		},
	},
	{
		// Debian VM: / on LUKS1 (vda2), an unencrypted second disk on
		// /srv, a swap file on /.
		name: "plain-data-disk",
		mounts: []string{
			"/ | /dev/mapper/vda2_crypt | dm-0 | luks1 | /dev/mapper/vda2_crypt | /dev/vda2 | dm-0,vda2,vda | ",
			"/boot | /dev/vda1 | vda1 | none |  |  | vda1,vda | vda1",
			"/srv | /dev/vdb1 | vdb1 | none |  |  | vdb1,vdb | vdb1",
		},
		swaps: []string{
			"/swapfile | file |  | / | luks1 | /dev/mapper/vda2_crypt | /dev/vda2 | dm-0,vda2,vda | ",
		},
		crypttab: []string{"vda2_crypt -> /dev/vda2"},
		luks:     []string{"/dev/vda2"},
		findings: []string{
			"fail LUKS-MOUNT-UNENCRYPTED /srv: data mount /srv (ext4 on /dev/vdb1) is not encrypted: no dm-crypt layer above vdb1",
		},
	},
	{
		// LVM on LUKS2 over several PVs: vg0 on two LUKS PVs (one LV
		// spans both), data-vg on one LUKS PV and one plain PV (sdc1):
		// an LV spread over both is not encrypted, one on the LUKS PV
		// only is. /var/lib/pgsql is mounted by its /dev/VG/LV name.
		name: "lvm-on-luks",
		mounts: []string{
			"/ | /dev/mapper/vg0-root | dm-2 | luks2 | /dev/mapper/luks-sda2 | /dev/sda2 | dm-2,dm-0,sda2,sda | ",
			"/boot | /dev/sda1 | sda1 | none |  |  | sda1,sda | sda1",
			"/var/lib/pgsql | /dev/vg0/pgsql | dm-3 | luks2 | /dev/mapper/luks-sda2 | /dev/sda2 | dm-3,dm-0,sda2,sda,dm-1,sdb | ",
			"/srv/archive | /dev/mapper/data--vg-archive | dm-6 | none |  |  | dm-6,dm-5,sdd,sdc1,sdc | sdc1",
			"/srv/scratch | /dev/mapper/data--vg-scratch | dm-7 | luks2 | /dev/mapper/luks-sdd | /dev/sdd | dm-7,dm-5,sdd | ",
		},
		swaps: []string{
			"/dev/dm-4 | partition | dm-4 |  | luks2 | /dev/mapper/luks-sdb | /dev/sdb | dm-4,dm-1,sdb | ",
		},
		crypttab: []string{"luks-sda2 -> /dev/sda2", "luks-sdb -> /dev/sdb", "luks-sdd -> /dev/sdd"},
		luks:     []string{"/dev/sda2", "/dev/sdb", "/dev/sdd"},
		findings: []string{
			"fail LUKS-MOUNT-UNENCRYPTED /srv/archive: data mount /srv/archive (ext4 on /dev/mapper/data--vg-archive) is not encrypted: no dm-crypt layer above sdc1",
		},
	},
	{
		// LUKS on LVM: vg1 on sda2 holds root, swap and srv-data LVs,
		// each under its own mapping: LUKS2, plain random-key swap,
		// LUKS1. crypttab names the LVs as /dev/VG/LV.
		name: "luks-on-lvm",
		mounts: []string{
			"/ | /dev/mapper/root_crypt | dm-3 | luks2 | /dev/mapper/root_crypt | /dev/mapper/vg1-root | dm-3,dm-0,sda2,sda | ",
			"/boot | /dev/sda1 | sda1 | none |  |  | sda1,sda | sda1",
			"/srv | /dev/mapper/srv_crypt | dm-5 | luks1 | /dev/mapper/srv_crypt | /dev/mapper/vg1-srv--data | dm-5,dm-2,sda2,sda | ",
		},
		swaps: []string{
			"/dev/dm-4 | partition | dm-4 |  | plain | /dev/mapper/swap_crypt |  | dm-4,dm-1,sda2,sda | ",
		},
		crypttab: []string{
			"root_crypt -> /dev/mapper/vg1-root",
			"swap_crypt -> /dev/mapper/vg1-swap",
			"srv_crypt -> /dev/mapper/vg1-srv--data",
		},
		luks:     []string{"/dev/mapper/vg1-root", "/dev/mapper/vg1-srv--data"},
		findings: nil,
	},
	{
		// crypttab with entries for present devices by UUID=,
		// PARTUUID= (upper case), LABEL="…" and an image file, and for
		// two absent devices.
		name: "crypttab-missing",
		mounts: []string{
			"/ | /dev/mapper/cryptroot | dm-0 | luks2 | /dev/mapper/cryptroot | /dev/vda2 | dm-0,vda2,vda | ",
			"/boot | /dev/vda1 | vda1 | none |  |  | vda1,vda | vda1",
		},
		swaps: nil,
		crypttab: []string{
			"cryptroot -> /dev/vda2",
			"backup -> ",
			"archive -> /dev/vdb1",
			"old-data -> ",
			"media -> /dev/vdb2",
			"vault -> /srv/vault.img",
		},
		luks: []string{"/dev/vda2", "/dev/vdb1", "/dev/vdb2", "/srv/vault.img"},
		findings: []string{
			"warn LUKS-CRYPTTAB-MISSING-DEVICE crypttab:backup: crypttab entry \"backup\" (line 4) names device UUID=6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d, which does not exist",
			"warn LUKS-CRYPTTAB-MISSING-DEVICE crypttab:old-data: crypttab entry \"old-data\" (line 6) names device /dev/sdz1, which does not exist",
		},
	},
	{
		// Plain dm-crypt: random-key swap on sda3 (passes) and /var on
		// plain dm-crypt with a key file (warns).
		name: "plain-dmcrypt",
		mounts: []string{
			"/ | /dev/mapper/sda2_crypt | dm-0 | luks2 | /dev/mapper/sda2_crypt | /dev/sda2 | dm-0,sda2,sda | ",
			"/boot | /dev/sda1 | sda1 | none |  |  | sda1,sda | sda1",
			"/var | /dev/mapper/var_crypt | dm-2 | plain | /dev/mapper/var_crypt |  | dm-2,sdb1,sdb | ",
		},
		swaps: []string{
			"/dev/dm-1 | partition | dm-1 |  | plain | /dev/mapper/cryptswap |  | dm-1,sda3,sda | ",
		},
		crypttab: []string{"sda2_crypt -> /dev/sda2", "cryptswap -> /dev/sda3", "var_crypt -> /dev/sdb1"},
		luks:     []string{"/dev/sda2"},
		findings: []string{
			"warn LUKS-MOUNT-PLAIN-DMCRYPT /var: data mount /var (ext4 on /dev/mapper/var_crypt) is on plain dm-crypt /dev/mapper/var_crypt with no LUKS header",
		},
	},
	{
		// Odd sources: / mounted as /dev/root (resolved through
		// mountinfo), a mount point with a space (\040), loop images on
		// an encrypted, an unencrypted and an NFS filesystem, ZFS, NFS,
		// zram swap written back to a plain partition, a swap file with
		// spaces, a swap device missing from sysfs, a detached header.
		name: "odd-sources",
		mounts: []string{
			"/ | /dev/root | vda1 | none |  |  | vda1,vda | vda1",
			"/srv/patient data | /dev/mapper/pd_crypt | dm-0 | luks2 | /dev/mapper/pd_crypt | /dev/vdb | dm-0,vdb | ",
			"/srv/images | /dev/loop0 | loop0 | luks2 | /dev/mapper/pd_crypt | /dev/vdb | loop0,dm-0,vdb | ",
			"/srv/junk | /dev/loop1 | loop1 | none |  |  | loop1,vda1,vda | vda1",
			"/srv/remote | /dev/loop2 | loop2 | unknown |  |  | loop2 | ",
			"/data | tank/records |  | unknown |  |  |  | ",
		},
		swaps: []string{
			"/dev/zram0 | partition | zram0 |  | none |  |  | zram0,vdc1,vdc | vdc1",
			"/srv/patient data/swap file | file |  | /srv/patient data | luks2 | /dev/mapper/pd_crypt | /dev/vdb | dm-0,vdb | ",
			"/dev/sdq9 | partition |  |  | unknown |  |  |  | ",
		},
		crypttab: []string{"pd_crypt -> /dev/vdb"},
		luks:     []string{"/etc/luks-headers/pd.img"},
		findings: []string{
			"fail LUKS-MOUNT-UNENCRYPTED /: data mount / (ext4 on /dev/root) is not encrypted: no dm-crypt layer above vda1",
			"fail LUKS-MOUNT-UNENCRYPTED /srv/junk: data mount /srv/junk (ext4 on /dev/loop1) is not encrypted: no dm-crypt layer above vda1",
			"warn LUKS-MOUNT-UNRESOLVED /srv/remote: data mount /srv/remote (ext4 on /dev/loop2): the devices under loop2 cannot be followed to disks, so its encryption cannot be judged",
			"warn LUKS-MOUNT-UNRESOLVED /data: data mount /data (zfs on tank/records): the source is not a block device in sys/block, so its encryption cannot be judged",
			"fail LUKS-SWAP-UNENCRYPTED /dev/zram0: swap /dev/zram0 is not encrypted: no dm-crypt layer above vdc1",
			"warn LUKS-SWAP-UNRESOLVED /dev/sdq9: swap /dev/sdq9 cannot be followed to disks, so its encryption cannot be judged",
		},
	},
}

func discFixtureRoot(name string) string { return filepath.Join("testdata", "systems", name) }

func TestDiscoverFixtures(t *testing.T) {
	for _, fx := range discFixtures {
		t.Run(fx.name, func(t *testing.T) {
			s, err := Discover(context.Background(), discFixtureRoot(fx.name))
			if err != nil {
				t.Fatal(err)
			}
			var mounts, swaps, crypttab, findings []string
			for _, m := range s.Mounts {
				if !m.Pseudo {
					mounts = append(mounts, discMountLine(m))
				} else if m.Device != "" || m.Encryption != "" || m.Stack != nil {
					t.Errorf("pseudo mount %s was resolved: %+v", m.MountPoint, m)
				}
			}
			for _, w := range s.Swaps {
				swaps = append(swaps, discSwapLine(w))
			}
			for _, e := range s.Crypttab {
				crypttab = append(crypttab, e.Name+" -> "+e.Resolved)
			}
			fs := CheckSystem(s, DefaultPolicy())
			for _, f := range fs {
				findings = append(findings, discFindingLine(f))
			}
			discCompare(t, "mounts", mounts, fx.mounts)
			discCompare(t, "swaps", swaps, fx.swaps)
			discCompare(t, "crypttab", crypttab, fx.crypttab)
			discCompare(t, "LUKSDevices", s.LUKSDevices(), fx.luks)
			discCompare(t, "findings", findings, fx.findings)
			discCheckFindings(t, s, fs)
		})
	}
}

// discCheckFindings checks what every finding must satisfy: a valid ID,
// a remedy, and evidence with no key file names.
func discCheckFindings(t *testing.T, s *System, fs []report.Finding) {
	t.Helper()
	for _, f := range fs {
		if !report.ValidID(f.ID) || f.Remedy == "" || f.Subject == "" || len(f.Evidence) == 0 {
			t.Errorf("malformed finding %+v", f)
		}
		for _, e := range s.Crypttab {
			for k, v := range f.Evidence {
				if e.KeyFile != "" && e.KeyFile != "none" && strings.Contains(v, e.KeyFile) {
					t.Errorf("finding %s evidence %s holds key file %q", f.ID, k, e.KeyFile)
				}
			}
		}
	}
}

func discCompare(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// The clean hosts give no warn or fail finding.
func TestDiscoverCleanHosts(t *testing.T) {
	for _, name := range []string{"encrypted-host", "luks-on-lvm"} {
		s, err := Discover(context.Background(), discFixtureRoot(name))
		if err != nil {
			t.Fatal(err)
		}
		var r report.Report
		for _, f := range CheckSystem(s, DefaultPolicy()) {
			r.Add(f)
		}
		if c := r.Counts(); c.Warn+c.Fail != 0 || r.ExitCode() != report.ExitOK {
			t.Errorf("%s: %+v", name, r.Findings)
		}
	}
}

// Devices of the fixture whose sys/block entries are symlinks into
// sys/devices and whose holders/ and slaves/ are relative symlinks, as
// on a real system.
func TestDiscoverDevicesSysfsSymlinks(t *testing.T) {
	s, err := Discover(context.Background(), discFixtureRoot("encrypted-host"))
	if err != nil {
		t.Fatal(err)
	}
	lvm := "LVM-Jx3kPq9LmN2vR8tY4wZ6aB1cD5eF7gH0"
	want := []BlockDevice{
		{Name: "dm-0", Path: "/dev/mapper/dm_crypt-0", Major: 252, Minor: 0, Type: "crypt", DMName: "dm_crypt-0",
			DMUUID: "CRYPT-LUKS2-3f2e8a1c4b5d4e6f8a9b0c1d2e3f4a5b-dm_crypt-0", Slaves: []string{"nvme0n1p3"},
			Holders: []string{"dm-1", "dm-2", "dm-3"}, Crypt: "luks2", Size: 993781760 * 512},
		{Name: "dm-1", Path: "/dev/mapper/ubuntu--vg-ubuntu--lv", Major: 252, Minor: 1, Type: "lvm", DMName: "ubuntu--vg-ubuntu--lv",
			DMUUID: lvm + "Qw8eR2tY6uI0oP4aS9dF3gH7jK1lZ5xC", Slaves: []string{"dm-0"}, Size: 209715200 * 512},
		{Name: "dm-2", Path: "/dev/mapper/ubuntu--vg-home", Major: 252, Minor: 2, Type: "lvm", DMName: "ubuntu--vg-home",
			DMUUID: lvm + "Mn4bV8cX2zL6kJ0hG5fD9sA3pO7iU1yT", Slaves: []string{"dm-0"}, Size: 775669760 * 512},
		{Name: "dm-3", Path: "/dev/mapper/ubuntu--vg-swap", Major: 252, Minor: 3, Type: "lvm", DMName: "ubuntu--vg-swap",
			DMUUID: lvm + "Rt6yU0iO4pA8sD2fG7hJ1kL5zX9cV3bN", Slaves: []string{"dm-0"}, Size: 8388608 * 512},
		{Name: "loop0", Path: "/dev/loop0", Major: 7, Minor: 0, Type: "loop", Size: 151464 * 512,
			Backing: "/var/lib/snapd/snaps/core22_1380.snap"},
		{Name: "loop1", Path: "/dev/loop1", Major: 7, Minor: 1, Type: "loop", Size: 182152 * 512,
			Backing: "/var/lib/snapd/snaps/lxd_29351.snap"},
		{Name: "loop2", Path: "/dev/loop2", Major: 7, Minor: 2, Type: "loop"},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Major: 259, Minor: 0, Type: "disk", Size: 1000215216 * 512},
		{Name: "nvme0n1p1", Path: "/dev/nvme0n1p1", Major: 259, Minor: 1, Type: "part", Parent: "nvme0n1", Size: 2201600 * 512},
		{Name: "nvme0n1p2", Path: "/dev/nvme0n1p2", Major: 259, Minor: 2, Type: "part", Parent: "nvme0n1", Size: 4194304 * 512},
		{Name: "nvme0n1p3", Path: "/dev/nvme0n1p3", Major: 259, Minor: 3, Type: "part", Parent: "nvme0n1",
			Holders: []string{"dm-0"}, Size: 993814528 * 512},
	}
	if !reflect.DeepEqual(s.Devices, want) {
		for i := range max(len(s.Devices), len(want)) {
			var g, w BlockDevice
			if i < len(s.Devices) {
				g = s.Devices[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("device %d:\ngot  %+v\nwant %+v", i, g, w)
			}
		}
	}
}

// Holders and slaves are read the same from relative symlinks (lvm-on-luks)
// and from empty files (plain-dmcrypt).
func TestDiscoverHoldersSlaves(t *testing.T) {
	for _, tc := range []struct {
		fixture, dev    string
		slaves, holders []string
	}{
		{"lvm-on-luks", "dm-6", []string{"dm-5", "sdc1"}, nil},
		{"lvm-on-luks", "dm-5", []string{"sdd"}, []string{"dm-6", "dm-7"}},
		{"lvm-on-luks", "dm-0", []string{"sda2"}, []string{"dm-2", "dm-3"}},
		{"lvm-on-luks", "sdc1", nil, []string{"dm-6"}},
		{"plain-dmcrypt", "dm-2", []string{"sdb1"}, nil},
		{"plain-dmcrypt", "sdb1", nil, []string{"dm-2"}},
	} {
		s, err := Discover(context.Background(), discFixtureRoot(tc.fixture))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(s.Devices, func(d BlockDevice) bool { return d.Name == tc.dev })
		if i < 0 {
			t.Fatalf("%s: no device %s", tc.fixture, tc.dev)
		}
		d := s.Devices[i]
		if !slices.Equal(d.Slaves, tc.slaves) || !slices.Equal(d.Holders, tc.holders) {
			t.Errorf("%s %s: slaves %q holders %q, want %q %q", tc.fixture, tc.dev, d.Slaves, d.Holders, tc.slaves, tc.holders)
		}
	}
}

func TestDiscoverLayers(t *testing.T) {
	s, err := Discover(context.Background(), discFixtureRoot("lvm-on-luks"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]Layer{
		"/var/lib/pgsql": {
			{Device: "dm-0", Path: "/dev/mapper/luks-sda2", Crypt: "luks2", Backing: "/dev/sda2"},
			{Device: "dm-1", Path: "/dev/mapper/luks-sdb", Crypt: "luks2", Backing: "/dev/sdb"},
		},
		"/srv/archive": {{Device: "dm-5", Path: "/dev/mapper/luks-sdd", Crypt: "luks2", Backing: "/dev/sdd"}},
		"/boot":        nil,
	}
	for _, m := range s.Mounts {
		if w, ok := want[m.MountPoint]; ok && !reflect.DeepEqual(m.Layers, w) {
			t.Errorf("%s: layers %+v, want %+v", m.MountPoint, m.Layers, w)
		}
	}
}

func TestDiscoverFstab(t *testing.T) {
	s, err := Discover(context.Background(), discFixtureRoot("odd-sources"))
	if err != nil {
		t.Fatal(err)
	}
	want := []FstabEntry{
		{Spec: "/dev/vda1", File: "/", VFSType: "ext4", Options: []string{"defaults"}, Freq: 0, PassNo: 1, Line: 2},
		{Spec: "/dev/mapper/pd_crypt", File: "/srv/patient data", VFSType: "ext4",
			Options: []string{"defaults", "x-systemd.requires=cryptsetup.target"}, PassNo: 2, Line: 3},
		{Spec: "/var/cache/junk.img", File: "/srv/junk", VFSType: "ext4", Options: []string{"loop"}, Line: 4},
		{Spec: "tank/records", File: "/data", VFSType: "zfs", Line: 5},
		{Spec: "nas.example.nhs.uk:/export/scans", File: "/mnt/scans", VFSType: "nfs4", Options: []string{"_netdev", "hard"}, Line: 6},
	}
	if !reflect.DeepEqual(s.Fstab, want) {
		t.Errorf("fstab:\ngot  %+v\nwant %+v", s.Fstab, want)
	}
}

func TestCheckSystemPolicy(t *testing.T) {
	s, err := Discover(context.Background(), discFixtureRoot("odd-sources"))
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy()
	p.Disabled = []string{IDSwapUnencrypted, IDMountUnresolved}
	p.IgnoreMounts = []string{"/srv/junk"}
	var got []string
	for _, f := range CheckSystem(s, p) {
		got = append(got, f.Severity.String()+" "+f.ID+" "+f.Subject)
	}
	discCompare(t, "findings", got, []string{
		"fail LUKS-MOUNT-UNENCRYPTED /",
		"warn LUKS-SWAP-UNRESOLVED /dev/sdq9",
	})
	discCompare(t, "checked", s.Checked(p), []string{
		"/", "/srv/patient data", "/srv/images", "/srv/remote", "/data",
		"/dev/zram0", "/srv/patient data/swap file", "/dev/sdq9", "crypttab:pd_crypt",
	})

	// Pseudo filesystems on data mount points are never judged; a mount
	// point listed twice gives one finding.
	s2 := &System{Mounts: []Mount{
		{Source: "tmpfs", MountPoint: "/var", FSType: "tmpfs", Pseudo: true},
		{Source: "/dev/sdb1", MountPoint: "/srv", FSType: "ext4", Device: "sdb1", Encryption: EncryptionNone, Unencrypted: []string{"sdb1"}},
		{Source: "/dev/sdb1", MountPoint: "/srv", FSType: "ext4", Device: "sdb1", Encryption: EncryptionNone, Unencrypted: []string{"sdb1"}},
		{Source: "/dev/mapper/x", MountPoint: "/home", FSType: "ext4", Device: "dm-0", Encryption: "tcrypt"},
		{Source: "/dev/zram1", MountPoint: "/var/tmp", FSType: "ext4", Device: "zram1", Encryption: EncryptionRAM},
	}}
	got = nil
	for _, f := range CheckSystem(s2, DefaultPolicy()) {
		got = append(got, f.ID+" "+f.Subject)
	}
	discCompare(t, "findings", got, []string{"LUKS-MOUNT-UNENCRYPTED /srv"})
}

// Every source form resolves to the right kernel device.
func TestDiscoverResolveSources(t *testing.T) {
	s, err := Discover(context.Background(), discFixtureRoot("lvm-on-luks"))
	if err != nil {
		t.Fatal(err)
	}
	r := &discResolver{root: s.Root, sys: s}
	r.index()
	for src, want := range map[string]string{
		"/dev/sda2":            "sda2",
		"/dev/dm-4":            "dm-4",
		"/dev/mapper/vg0-swap": "dm-4",
		"/dev/vg0/pgsql":       "dm-3",
		"/dev/data-vg/archive": "dm-6",
		"/dev/block/253:6":     "dm-6",
		"/dev/block/8:33":      "sdc1",
		"/dev/../dev/./sdc1":   "sdc1",
		"UUID=1e2d3c4b-5a69-4788-97a6-b5c4d3e2f1a0":              "sda2",
		"UUID=1E2D3C4B-5A69-4788-97A6-B5C4D3E2F1A0":              "sda2",
		`UUID="c0ffee00-1234-4abc-9def-0123456789ab"`:            "sdd",
		"/dev/disk/by-uuid/2c4e6a8b-0d1f-4b3d-a5c7-e9f1b3d5a7c9": "sda1",
		"ID=wwn-0x5000c500a1b2c3d4":                              "sdb",
		"/dev/disk/by-id/wwn-0x5000c500a1b2c3d4":                 "sdb",
		"UUID=00000000-0000-0000-0000-000000000000":              "",
		"PARTUUID=deadbeef-01":                                   "",
		"/dev/sdz":                                               "",
		"/dev/vg0":                                               "",
		"tank/records":                                           "",
		"":                                                       "",
		"/../../../../dev/sda2":                                  "sda2",
	} {
		if got := r.resolve(src); got != want {
			t.Errorf("resolve(%q) = %q, want %q", src, got, want)
		}
	}
}

// A file belongs to the mount with the longest mount point above it, the
// last mounted when a mount point is used twice.
func TestDiscoverMountOf(t *testing.T) {
	s := &System{Mounts: []Mount{
		{MountPoint: "/", Source: "a"},
		{MountPoint: "/srv", Source: "b"},
		{MountPoint: "/srv", Source: "c"},
		{MountPoint: "/srvx", Source: "d"},
		{MountPoint: "/srv/x/y", Source: "e"},
	}}
	r := &discResolver{sys: s}
	for p, want := range map[string]string{
		"/swapfile":     "a",
		"/srv":          "c",
		"/srv/swap":     "c",
		"/srvx/swap":    "d",
		"/srv/x/y/z":    "e",
		"/srv/x/yz":     "c",
		"relative/path": "",
	} {
		got := ""
		if m := r.mountOf(p); m != nil {
			got = m.Source
		}
		if got != want {
			t.Errorf("mountOf(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestDiscoverLiveRoot(t *testing.T) {
	if _, err := os.Stat("/sys/block"); err != nil {
		testenv.Missing(t, "no /sys/block on this machine: %v", err)
	}
	start := time.Now()
	s, err := Discover(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Discover(/) took %v: %d devices, %d mounts, %d swaps", time.Since(start), len(s.Devices), len(s.Mounts), len(s.Swaps))
	i := slices.IndexFunc(s.Mounts, func(m Mount) bool { return m.MountPoint == "/" })
	if i < 0 {
		t.Fatalf("no root mount among %d mounts", len(s.Mounts))
	}
	m := s.Mounts[i]
	t.Logf("/ is %s on %s: device %q, stack %q, encryption %q", m.FSType, m.Source, m.Device, m.Stack, m.Encryption)
	if !m.Pseudo && m.Encryption == "" {
		t.Errorf("root mount not judged: %+v", m)
	}
	_ = CheckSystem(s, DefaultPolicy())
}

func TestDiscoverCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Discover(ctx, discFixtureRoot("encrypted-host")); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// discWriteTree writes files (path → content) under a new temporary root.
func discWriteTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDiscoverErrors(t *testing.T) {
	base := map[string]string{
		"sys/block/sda/dev":  "8:0\n",
		"sys/block/sda/size": "2048\n",
		"proc/mounts":        "/dev/sda / ext4 rw 0 0\n",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		files    map[string]string
		notExist bool
		want     string // substring of the error
	}{
		{"no sys/block", base, true, `sys/block": `},
		{"no mounts", with("proc/mounts", ""), true, "proc/mounts"},
		{"bad dev", with("sys/block/sda/dev", "8-0\n"), false, `want MAJOR:MINOR, got "8-0"`},
		{"bad size", with("sys/block/sda/size", "big\n"), false, `want a count of 512-byte sectors, got "big"`},
		{"bad mounts", with("proc/mounts", "/dev/sda / ext4 rw 0 0\nrubbish\n"), false, `proc/mounts": line 2: want 6 fields`},
		{"bad swaps", with("proc/swaps", "Filename Type Size Used Priority\n/dev/sda2 partition lots 0 -2\n"), false, `proc/swaps": line 2: size "lots"`},
		{"bad crypttab", with("etc/crypttab", "# c\n\nname\n"), false, `etc/crypttab": line 3: want 2 to 4 fields`},
		{"bad fstab", with("etc/fstab", "/dev/sda / ext4 defaults x 1\n"), false, `etc/fstab": line 1: freq field "x" is not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := discWriteTree(t, tc.files)
			if tc.name == "no sys/block" {
				os.RemoveAll(filepath.Join(root, "sys"))
			}
			s, err := Discover(context.Background(), root)
			if err == nil || s != nil {
				t.Fatalf("got %v, %v; want an error", s, err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), root) {
				t.Errorf("error %q does not name the file or say %q", err, tc.want)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, !tc.notExist)
			}
		})
	}

	// Missing optional files are fine; the bare tree resolves.
	s, err := Discover(context.Background(), discWriteTree(t, base))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Mounts) != 1 || s.Mounts[0].Encryption != EncryptionNone || s.Swaps != nil || s.Crypttab != nil || s.Fstab != nil {
		t.Errorf("got %+v", s)
	}
}

// Every fixture file name must be allowed in a Go module zip (no ':' or
// '\'), and every symlink must be relative and stay inside its fixture.
func TestDiscoverFixtureFiles(t *testing.T) {
	root := filepath.Join("testdata", "systems")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.ContainsAny(d.Name(), `:\"'*<>?`+"`|") {
			t.Errorf("%s: name not allowed in a module zip", p)
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fixture := strings.Split(filepath.ToSlash(rel), "/")[0]
		joined := filepath.Join(filepath.Dir(p), target)
		if filepath.IsAbs(target) || !strings.HasPrefix(joined, filepath.Join(root, fixture)+string(filepath.Separator)) {
			t.Errorf("%s -> %s leaves fixture %s", p, target, fixture)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseMounts(t *testing.T) {
	in := "" +
		"/dev/sda1 / ext4 rw,relatime 0 0\n" +
		"\n" +
		"  /dev/mapper/x\t/srv/patient\\040data   ext4\trw 0 0  \r\n" +
		"tab\\011src /a\\134b\\012c tmpfs rw\n" +
		"#notacomment /x ext4 rw 0 0\n" +
		"bad\\08 /y ext4 rw 0 0\n"
	got, err := ParseMounts(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Source: "/dev/sda1", MountPoint: "/", FSType: "ext4", Options: "rw,relatime"},
		{Source: "/dev/mapper/x", MountPoint: "/srv/patient data", FSType: "ext4", Options: "rw"},
		{Source: "tab\tsrc", MountPoint: "/a\\b\nc", FSType: "tmpfs", Options: "rw"},
		{Source: "#notacomment", MountPoint: "/x", FSType: "ext4", Options: "rw"},
		{Source: "bad\\08", MountPoint: "/y", FSType: "ext4", Options: "rw"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for in, want := range map[string]string{
		"a b c\n":                      "line 1: want 6 fields (source, mount point, type, options, freq, passno), got 3",
		"a b c d 0 0\na b c d e f g\n": "line 2: want 6 fields (source, mount point, type, options, freq, passno), got 7",
		"a b c d zero 0\n":             `line 1: freq field "zero" is not a number`,
		"a b c d 0 x\n":                `line 1: passno field "x" is not a number`,
		strings.Repeat("x", 2<<20):     "line 1: bufio.Scanner: token too long",
	} {
		got, err := ParseMounts(strings.NewReader(in))
		if err == nil || err.Error() != want || got != nil {
			t.Errorf("ParseMounts(%.20q) = %v, %v; want error %q", in, got, err, want)
		}
	}
}

func TestParseSwaps(t *testing.T) {
	in := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
		"/dev/dm-1                               partition\t8388604\t\t1024\t\t-2\n" +
		"/swap\\040file                           file\t\t1048572\t\t0\t\t10\n"
	got, err := ParseSwaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Swap{
		{Source: "/dev/dm-1", Type: "partition", Size: 8388604, Used: 1024, Priority: -2},
		{Source: "/swap file", Type: "file", Size: 1048572, Priority: 10},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got, err := ParseSwaps(strings.NewReader("Filename Type Size Used Priority\n")); err != nil || got != nil {
		t.Errorf("header only: %v, %v", got, err)
	}
	for in, want := range map[string]string{
		"Filename Type Size Used Priority\n/dev/sda partition 1 0\n": "line 2: want 5 fields (filename, type, size, used, priority), got 4",
		"/dev/sda partition -1 0 0\n":                                `line 1: size "-1" is not a number of KiB`,
		"/dev/sda partition 1 x 0\n":                                 `line 1: used "x" is not a number of KiB`,
		"/dev/sda partition 1 0 high\n":                              `line 1: priority "high" is not a number`,
	} {
		got, err := ParseSwaps(strings.NewReader(in))
		if err == nil || err.Error() != want || got != nil {
			t.Errorf("ParseSwaps(%q) = %v, %v; want error %q", in, got, err, want)
		}
	}
}

func TestParseCrypttab(t *testing.T) {
	in := "# <target name> <source device> <key file> <options>\n" +
		"\n" +
		"cryptroot UUID=0d5c7a2e-8f1b-4c3d-9e6a-7b2c1d0e9f8a none luks,discard\n" +
		"\t  # indented comment\n" +
		"swap\t/dev/disk/by-partuuid/2b9d6f3a-03\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=512\r\n" +
		"data   /dev/vg0/data\n" +
		"media LABEL=My\\040Disk /etc/keys/a\\040b.key\n"
	got, err := ParseCrypttab(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []CrypttabEntry{
		{Name: "cryptroot", Device: "UUID=0d5c7a2e-8f1b-4c3d-9e6a-7b2c1d0e9f8a", KeyFile: "none", Options: []string{"luks", "discard"}, Line: 3},
		{Name: "swap", Device: "/dev/disk/by-partuuid/2b9d6f3a-03", KeyFile: "/dev/urandom", Options: []string{"swap", "cipher=aes-xts-plain64", "size=512"}, Line: 5},
		{Name: "data", Device: "/dev/vg0/data", Line: 6},
		{Name: "media", Device: "LABEL=My Disk", KeyFile: "/etc/keys/a b.key", Line: 7},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for in, want := range map[string]string{
		"only-a-name\n":      "line 1: want 2 to 4 fields (name, device, key file, options), got 1",
		"a b c d e\n":        "line 1: want 2 to 4 fields (name, device, key file, options), got 5",
		"ok dev\n\n#\nbad\n": "line 4: want 2 to 4 fields (name, device, key file, options), got 1",
	} {
		got, err := ParseCrypttab(strings.NewReader(in))
		if err == nil || err.Error() != want || got != nil {
			t.Errorf("ParseCrypttab(%q) = %v, %v; want error %q", in, got, err, want)
		}
	}
}

func TestParseFstab(t *testing.T) {
	in := "# /etc/fstab\n" +
		"UUID=e2b6c1d8 /  btrfs subvol=root,compress=zstd:1 0 0\n" +
		"/dev/sdb1\t/srv/patient\\040data\text4\tdefaults\t0\t2\n" +
		"LABEL=x /mnt\n" +
		"\n" +
		"server:/e /n nfs4\r\n"
	got, err := ParseFstab(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []FstabEntry{
		{Spec: "UUID=e2b6c1d8", File: "/", VFSType: "btrfs", Options: []string{"subvol=root", "compress=zstd:1"}, Line: 2},
		{Spec: "/dev/sdb1", File: "/srv/patient data", VFSType: "ext4", Options: []string{"defaults"}, PassNo: 2, Line: 3},
		{Spec: "LABEL=x", File: "/mnt", Line: 4},
		{Spec: "server:/e", File: "/n", VFSType: "nfs4", Line: 6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for in, want := range map[string]string{
		"/dev/sda\n":                       "line 1: want 2 to 6 fields (spec, file, vfstype, options, freq, passno), got 1",
		"a b c d 0 0 7\n":                  "line 1: want 2 to 6 fields (spec, file, vfstype, options, freq, passno), got 7",
		"# x\na b c d 0 second\n":          `line 2: passno field "second" is not a number`,
		"a b c d 99999999999999999999 0\n": `line 1: freq field "99999999999999999999" is not a number`,
	} {
		got, err := ParseFstab(strings.NewReader(in))
		if err == nil || err.Error() != want || got != nil {
			t.Errorf("ParseFstab(%q) = %v, %v; want error %q", in, got, err, want)
		}
	}
}

func TestDiscLVMName(t *testing.T) {
	for dm, want := range map[string][2]string{
		"vg0-root":              {"vg0", "root"},
		"ubuntu--vg-ubuntu--lv": {"ubuntu-vg", "ubuntu-lv"},
		"vg1-srv--data":         {"vg1", "srv-data"},
		"a--b--c-d":             {"a-b-c", "d"},
		"vg-lv-tpool":           {"vg", "lv-tpool"},
		"novg":                  {"", ""},
		"-lv":                   {"", ""},
		"vg-":                   {"", ""},
	} {
		vg, lv, ok := discLVMName(dm)
		if vg != want[0] || lv != want[1] || ok != (want[0] != "") {
			t.Errorf("discLVMName(%q) = %q, %q, %v; want %q", dm, vg, lv, ok, want)
		}
	}
}

func TestDiscDMType(t *testing.T) {
	for uuid, want := range map[string][2]string{
		"CRYPT-LUKS2-3f2e8a1c4b5d4e6f8a9b0c1d2e3f4a5b-luks-3f2e":  {"crypt", "luks2"},
		"CRYPT-LUKS1-a4c8e2f61b3d4f5a8c7e9d0b2f4a6c8e-vda2_crypt": {"crypt", "luks1"},
		"CRYPT-PLAIN-cryptswap":                                   {"crypt", "plain"},
		"CRYPT-TCRYPT-veracrypt1":                                 {"crypt", "tcrypt"},
		"CRYPT-BITLK-win":                                         {"crypt", "bitlk"},
		"CRYPT-VERITY-0123-root":                                  {"verity", ""},
		"CRYPT-INTEGRITY-x":                                       {"integrity", ""},
		"CRYPT-SUBDEV-3f2e-luks_dif":                              {"integrity", ""},
		"CRYPT-TEMP-x":                                            {"dm", ""},
		"LVM-Jx3kPq9LmN2vR8tY4wZ6aB1cD5eF7gH0Qw8eR2t":             {"lvm", ""},
		"mpath-3600508b400105e210000900000490000":                 {"mpath", ""},
		"part1-mpath-3600508b400105e21":                           {"part", ""},
		"":                                                        {"dm", ""},
	} {
		typ, crypt := discDMType(uuid)
		if typ != want[0] || crypt != want[1] {
			t.Errorf("discDMType(%q) = %q, %q; want %q", uuid, typ, crypt, want)
		}
	}
}

func TestDiscTagPath(t *testing.T) {
	for spec, want := range map[string]string{
		"UUID=3f2e8a1c-4b5d":             "/dev/disk/by-uuid/3f2e8a1c-4b5d",
		`UUID="A1B2-C3D4"`:               "/dev/disk/by-uuid/A1B2-C3D4",
		"PARTUUID=9F4B2C1E-01":           "/dev/disk/by-partuuid/9f4b2c1e-01",
		"LABEL=Patient Media":            `/dev/disk/by-label/Patient\x20Media`,
		"LABEL=Médias/x":                 `/dev/disk/by-label/Médias\x2fx`,
		"LABEL=a\xffb":                   `/dev/disk/by-label/a\xffb`,
		"PARTLABEL=EFI system partition": `/dev/disk/by-partlabel/EFI\x20system\x20partition`,
		"ID=wwn-0x5000c500a1b2c3d4":      "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
		"UUID=":                          "",
		"UUID=../../x":                   "",
		"FOO=bar":                        "",
		"/dev/sda1":                      "",
	} {
		got, ok := discTagPath(spec)
		if got != want || ok != (want != "") {
			t.Errorf("discTagPath(%q) = %q, %v; want %q", spec, got, ok, want)
		}
	}
}

func TestDiscUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:            "plain",
		`a\040b`:           "a b",
		`\011\012\134\043`: "\t\n\\#",
		`\400`:             `\400`,
		`\08`:              `\08`,
		`end\04`:           `end\04`,
		`\\040`:            "\\ ",
		`\377`:             "\xff",
	} {
		if got := discUnescape(in); got != want {
			t.Errorf("discUnescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkDiscover(b *testing.B) {
	for _, root := range []string{discFixtureRoot("encrypted-host"), "/"} {
		b.Run(strings.ReplaceAll(root, "/", "_"), func(b *testing.B) {
			if _, err := os.Stat(filepath.Join(root, "sys", "block")); err != nil {
				b.Skip(err)
			}
			for b.Loop() {
				s, err := Discover(context.Background(), root)
				if err != nil {
					b.Fatal(err)
				}
				_ = CheckSystem(s, DefaultPolicy())
			}
		})
	}
}

func ExampleDiscover() {
	s, err := Discover(context.Background(), "testdata/systems/lvm-on-luks")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range s.Mounts {
		if !m.Pseudo {
			fmt.Printf("%-15s %-6s %s\n", m.MountPoint, m.Encryption, strings.Join(m.Stack, " "))
		}
	}
	for _, f := range CheckSystem(s, DefaultPolicy()) {
		fmt.Println(f.Severity, f.ID, f.Subject)
	}
	fmt.Println("LUKS headers:", s.LUKSDevices())
	// Output:
	// /               luks2  dm-2 dm-0 sda2 sda
	// /boot           none   sda1 sda
	// /var/lib/pgsql  luks2  dm-3 dm-0 sda2 sda dm-1 sdb
	// /srv/archive    none   dm-6 dm-5 sdd sdc1 sdc
	// /srv/scratch    luks2  dm-7 dm-5 sdd
	// fail LUKS-MOUNT-UNENCRYPTED /srv/archive
	// LUKS headers: [/dev/sda2 /dev/sdb /dev/sdd]
}

func ExampleParseCrypttab() {
	tab := `# <name> <device> <key file> <options>
cryptroot UUID=0d5c7a2e-8f1b-4c3d-9e6a-7b2c1d0e9f8a none luks,discard
cryptswap /dev/disk/by-partuuid/2b9d6f3a-03 /dev/urandom swap,cipher=aes-xts-plain64,size=512
`
	entries, err := ParseCrypttab(strings.NewReader(tab))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range entries {
		fmt.Printf("line %d: %s on %s, options %q\n", e.Line, e.Name, e.Device, e.Options)
	}
	// Output:
	// line 2: cryptroot on UUID=0d5c7a2e-8f1b-4c3d-9e6a-7b2c1d0e9f8a, options ["luks" "discard"]
	// line 3: cryptswap on /dev/disk/by-partuuid/2b9d6f3a-03, options ["swap" "cipher=aes-xts-plain64" "size=512"]
}
