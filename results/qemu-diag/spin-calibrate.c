#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>
static inline uint64_t t(void){return __rdtsc();}
static double now(void){struct timespec ts;clock_gettime(CLOCK_MONOTONIC,&ts);return ts.tv_sec*1e9+ts.tv_nsec;}
int main(int argc,char**argv){
  uint64_t cs[]={2,23,115,460};
  for(int k=0;k<4;k++){uint64_t c=cs[k];volatile uint64_t sink=0;
    double best=1e18;
    for(int rep=0;rep<7;rep++){double a=now();
      for(int i=0;i<1000000;i++){uint64_t t0=t();while(t()-t0<c){} sink++;}
      double d=(now()-a)/1e6; if(d<best)best=d;}
    printf("cycles=%lu: %.1f ns per spin\n",c,best);}
}
