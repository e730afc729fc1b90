/*
 * The real stack's sandbox process (the image 127.0.0.1:5000/pause:3.8 of ci/realstack).
 *
 * A pod's infra container only has to hold the pod's namespaces open. As PID 1 of a shared PID
 * namespace it also adopts orphans, so it reaps every child that exits; SIGINT and SIGTERM end
 * it at once with status 0, so stopping a sandbox needs no SIGKILL. Built with
 * `gcc -static -O2`: the image holds this one file and nothing else.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_child(int sig)
{
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa = {0};
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(void)
{
    if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
        static const char msg[] = "pause: sigaction failed\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 1;
    }
    for (;;)
        pause();
}
