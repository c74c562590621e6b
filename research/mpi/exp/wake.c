/*
** wake.c -- latency from a write() to the wake-up of a process blocked in
** poll() on it, when the writer first busy-waits X us (the reader's vCPU may
** halt meanwhile): the price of every doorbell ring.
**
** usage: wake X [ROUNDS [pipe|unix|tcp]]     (TO=ns: ppoll with that timeout
**        in a loop instead of an infinite poll)
** Reference VM, quiet: 9 us (X=0), 17 us (X=1000), 42 us (X=5000) medians;
** 85-130 us when other work loads the host.
*/
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static void tcppair(int sv[2]){int l=socket(AF_INET,SOCK_STREAM,0),one=1;struct sockaddr_in a;socklen_t al=sizeof a;memset(&a,0,sizeof a);a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);bind(l,(void*)&a,sizeof a);listen(l,1);getsockname(l,(void*)&a,&al);sv[0]=socket(AF_INET,SOCK_STREAM,0);connect(sv[0],(void*)&a,sizeof a);sv[1]=accept(l,0,0);setsockopt(sv[0],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);setsockopt(sv[1],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);close(l);}
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){double x=atof(v[1])*1e-6;int n=c>2?atoi(v[2]):300,i,p[2],q[2];double *lat=malloc(n*sizeof*lat);
const char*kind=c>3?v[3]:"pipe";
if(!strcmp(kind,"tcp")){int a[2],b[2];tcppair(a);tcppair(b);p[1]=a[0];p[0]=a[1];q[1]=b[0];q[0]=b[1];}
else if(!strcmp(kind,"unix")){int a[2],b[2];socketpair(AF_UNIX,SOCK_STREAM,0,a);socketpair(AF_UNIX,SOCK_STREAM,0,b);p[1]=a[0];p[0]=a[1];q[1]=b[0];q[0]=b[1];}
else {pipe(p);pipe(q);}
if(fork()==0){for(i=0;i<n;i++){char b;double t0=now(),t;while(now()-t0<x){}t=now();write(p[1],&t,8);read(q[0],&b,1);}_exit(0);}
for(i=0;i<n;i++){struct pollfd f={p[0],POLLIN,0};double t;struct timespec to={0,getenv("TO")?atol(getenv("TO")):0};if(getenv("TO"))while(ppoll(&f,1,&to,0)==0){}else poll(&f,1,-1);double w=now();read(p[0],&t,8);lat[i]=(w-t)*1e6;write(q[1],"x",1);}
wait(NULL);qsort(lat,n,sizeof*lat,cmp);printf("%-4s busy %5.0f us before write: wake-up latency median %.1f us, p90 %.1f us, max %.1f us\n",kind,x*1e6,lat[n/2],lat[n*9/10],lat[n-1]);return 0;}
