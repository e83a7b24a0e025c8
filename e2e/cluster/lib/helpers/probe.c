/* A static binary for the selftest's image-volume check: mounted from its own image into a
 * sandbox Pod, it must run there. Prints a fixed word, its uid and its arguments. */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  printf("kubexec-probe ok uid=%u", (unsigned)getuid());
  for (int i = 1; i < argc; i++) printf(" %s", argv[i]);
  printf("\n");
  return 0;
}
