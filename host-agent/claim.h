// SPDX-License-Identifier: MIT
#ifndef IPITRACE_HOST_AGENT_CLAIM_H_
#define IPITRACE_HOST_AGENT_CLAIM_H_

#include <cstdint>
#include <string>

#include "result.h"

namespace ipitrace {

// The host's claim on a guest region (docs/streams.md, "Regions and
// files"): before the guest boots, the file behind the ivshmem device that
// is meant for ipitrace gets the region magic (IPT_MAGIC) at offset 0.  The
// guest module writes only into a device whose region starts with it (or
// the one its device= parameter names), so another ivshmem device of the
// guest is never touched.  ClaimGuestRegion creates the file (sparse, at
// least 'size' bytes, mode 0666 for a QEMU running as another user) or
// claims an existing one: an ipitrace region already, or one whose first
// 4 KiB are zero.  A file holding anything else is someone else's:
// kForeign, and not a byte of it is changed.
Status ClaimGuestRegion(const std::string& path, uint64_t size);

}  // namespace ipitrace

#endif  // IPITRACE_HOST_AGENT_CLAIM_H_
