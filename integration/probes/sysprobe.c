/* sysprobe OP: makes one system call the seccomp tests care about and reports what the kernel
 * said: "ok" (exit 0) or the error text (exit 1). Built static by the tests and put into a test
 * image beside busybox. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sysprobe keyctl|unshare-user|mount-tmpfs DIR|chmod PATH|nr NUMBER\n");
        return 2;
    }
    const char *op = argv[1];
    long rc;
    if (!strcmp(op, "keyctl")) {
        /* KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), creating it. */
        rc = syscall(SYS_keyctl, 0, -3, 1);
    } else if (!strcmp(op, "unshare-user")) {
        rc = unshare(CLONE_NEWUSER);
    } else if (!strcmp(op, "mount-tmpfs") && argc > 2) {
        rc = mount("probe", argv[2], "tmpfs", 0, "size=64k");
    } else if (!strcmp(op, "chmod") && argc > 2) {
        rc = syscall(SYS_chmod, argv[2], 0600);
    } else if (!strcmp(op, "nr") && argc > 2) {
        /* A syscall by number, without arguments. */
        rc = syscall(atol(argv[2]));
    } else {
        fprintf(stderr, "sysprobe: unknown operation %s\n", op);
        return 2;
    }
    if (rc < 0) {
        printf("%s: %s\n", op, strerror(errno));
        return 1;
    }
    printf("%s: ok\n", op);
    return 0;
}
