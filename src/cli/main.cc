#include <cstdio>

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "usage: fireflyer generate --model DIR --prompt TEXT\n");
  return 2;
}
