// shmkit from C++: RAII handles (std::unique_ptr with the _close functions), a child
// process filling frames of floats in place in the ring (a loan) and the parent
// reading them in place (recv_ref) as a std::span-like view. No copies either way.
//
//   ./frames [FRAMES]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>

#include <shmkit.h>

namespace {

void check(int rc, const char *what) {
    if (rc != SHMKIT_OK) throw std::runtime_error(std::string(what) + ": " + shmkit_last_error());
}

using Sender = std::unique_ptr<shmkit_sender, decltype(&shmkit_sender_close)>;
using Receiver = std::unique_ptr<shmkit_receiver, decltype(&shmkit_receiver_close)>;

constexpr const char *kChannel = "posix:/shmkit.example.cpp-frames";
constexpr size_t kFloats = 1024;
constexpr int64_t kSecond = 1000000000;

int produce(long frames) {
    shmkit_sender *raw = nullptr;
    check(shmkit_sender_open(kChannel, 10 * kSecond, &raw), "open");
    Sender tx(raw, &shmkit_sender_close);
    for (long f = 0; f < frames; f++) {
        void *room = nullptr;
        check(shmkit_sender_loan(tx.get(), kFloats * sizeof(float), -1, &room), "loan");
        float *frame = static_cast<float *>(room);
        std::iota(frame, frame + kFloats, static_cast<float>(f));  // written in place
        check(shmkit_sender_commit(tx.get(), kFloats * sizeof(float)), "commit");
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    long frames = argc > 1 ? std::atol(argv[1]) : 10000;
    try {
        shmkit_receiver *raw = nullptr;
        check(shmkit_receiver_create(kChannel, 1 << 20, 0, 0600, &raw), "create");
        Receiver rx(raw, &shmkit_receiver_close);
        pid_t child = fork();
        if (child == 0) std::exit(produce(frames));
        double total = 0;
        for (long f = 0; f < frames; f++) {
            const void *data = nullptr;
            size_t len = 0;
            check(shmkit_receiver_recv_ref(rx.get(), &data, &len, 10 * kSecond), "recv_ref");
            const float *frame = static_cast<const float *>(data);  // the ring itself
            if (len != kFloats * sizeof(float) || frame[0] != static_cast<float>(f))
                throw std::runtime_error("frame " + std::to_string(f) + " is wrong");
            total += frame[kFloats - 1];
            check(shmkit_receiver_release(rx.get()), "release");
        }
        int status = 0;
        waitpid(child, &status, 0);
        std::printf("received %ld frames of %zu floats in place, checksum %.0f\n", frames, kFloats, total);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "frames: %s\n", e.what());
        return 1;
    }
}
