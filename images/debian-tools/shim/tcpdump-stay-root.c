/*
 * Preloaded by /usr/local/sbin/tcpdump. Debian's tcpdump, run as root, switches to a user
 * after opening the capture: initgroups() + setgid() + setuid(). With `-Z root` the ids stay
 * the same, which needs no capability, but initgroups() always does (CAP_SETGID, which lab
 * containers never get), so tcpdump would exit. Keeping root's supplementary groups as they
 * are is all this does.
 */
#include <grp.h>
#include <sys/types.h>

int initgroups(const char *user, gid_t group)
{
    (void)user;
    (void)group;
    return 0;
}
